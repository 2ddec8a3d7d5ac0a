"""The ``choreo`` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from events import cli_ops, cli_outbox, cli_publish
from events.catalogue import Catalogue, TopicSpec
from events.cli_ops import OpsError
from events.settings import PlatformSettings, settings_error
from events.topics import TopicError, TopicReport, apply_topics


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming what is wrong, instead of argparse's usage dump.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


Command = Callable[[argparse.Namespace, PlatformSettings], int]


def _broker(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from infra.broker import BrokerError, default_spec, down, status, up

    spec = default_spec()
    try:
        if args.action == "up":
            st = up(spec)
            print(f"broker running (pid {st.pid}) at {st.bootstrap}; log: {st.log_file}")
        elif args.action == "down":
            was = down(spec)
            print("broker stopped" if was else "broker was not running")
        else:
            st = status(spec)
            state = f"running (pid {st.pid})" if st.running else "stopped"
            print(f"broker {state} at {st.bootstrap}; log: {st.log_file}")
            return 0 if st.running else 3
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    return 0


def _topics(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.catalogue import CatalogueError

    try:
        catalogue = Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
    except CatalogueError as exc:
        raise CliError(str(exc)) from None
    specs = list(catalogue.topics.values())
    if args.action == "list":
        for spec in specs:
            print(f"{spec.name}\t{spec.partitions} partitions\t{', '.join(spec.event_types)}")
        return 0
    try:
        report = asyncio.run(_apply(settings.kafka_bootstrap_servers, specs))
    except (TopicError, TimeoutError, OSError) as exc:
        raise CliError(f"topics apply: {exc or type(exc).__name__}") from None
    for name in report.created:
        print(f"created   {name}")
    for name in report.unchanged:
        print(f"ok        {name}")
    for diff in report.differences:
        print(f"DIFFERS   {diff}")
    return 1 if report.differences else 0


async def _apply(bootstrap: str, specs: list[TopicSpec]) -> TopicReport:
    async with asyncio.timeout(60):
        return await apply_topics(bootstrap, specs)


def _schemas(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.compat import CatalogueError, check_catalogue, write_lock

    root = Path(args.root) if args.root else settings.schemas_dir
    if not root.is_dir():
        raise CliError(f"schemas root {root} is not a directory")
    if args.action == "release":
        try:
            added = write_lock(root)
        except CatalogueError as exc:
            raise CliError(f"cannot release: {exc}") from None
        for line in added:
            print(f"released  {line}")
        if not added:
            print("nothing new to release")
        return 0
    problems = check_catalogue(root)
    for problem in problems:
        print(f"{problem.path}: {problem.message}")
    if problems:
        print(f"{len(problems)} problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"schemas ok: {root}")
    return 0


def _demo(args: argparse.Namespace, settings: PlatformSettings) -> int:
    import runpy

    # The demo drives the reference services; run it as a module so the platform
    # library keeps no import of service code.
    sys.argv = [
        "choreo demo",
        "--orders-per-path",
        str(args.orders_per_path),
        "--deadline",
        str(args.deadline),
        *(["--keep"] if args.keep else []),
    ]
    try:
        runpy.run_module("services.demo", run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _replay(args: argparse.Namespace, settings: PlatformSettings) -> int:
    import os
    import subprocess

    # The projections belong to the query service: run its replay module as a process so
    # the platform library imports no service code.
    env = dict(os.environ)
    if env.get("QUERY_DATABASE_URL"):
        env["DATABASE_URL"] = env["QUERY_DATABASE_URL"]
    cmd = [sys.executable, "-m", "services.query.replay", args.projection]
    if args.verify:
        cmd.append("--verify")
    if args.readers is not None:
        cmd += ["--readers", str(args.readers)]
    return subprocess.run(cmd, env=env, check=False).returncode


def _up(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.supervisor import SupervisorError, load_manifest, start, wait_ready
    from infra.broker import BrokerError, default_spec, up

    try:
        st = up(default_spec())
        print(f"broker running at {st.bootstrap}")
        catalogue = Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
        asyncio.run(_apply(settings.kafka_bootstrap_servers, list(catalogue.topics.values())))
        specs = load_manifest()
        start(specs, var_dir=settings.var_dir, bootstrap=settings.kafka_bootstrap_servers)
        wait_ready(specs, var_dir=settings.var_dir)
    except (BrokerError, SupervisorError, TopicError) as exc:
        raise CliError(str(exc)) from None
    for spec in specs:
        print(
            f"{spec.name:<14} http://127.0.0.1:{spec.port}   log: "
            f"{settings.var_dir / 'logs' / (spec.name + '.log')}"
        )
    return 0


def _down(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.supervisor import load_manifest, stop
    from infra.broker import default_spec, down

    stopped = stop(load_manifest(), var_dir=settings.var_dir)
    print(f"stopped: {', '.join(stopped) or 'no services were running'}")
    if args.broker:
        print("broker stopped" if down(default_spec()) else "broker was not running")
    return 0


def _ps(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.supervisor import load_manifest, status

    rows = status(load_manifest(), var_dir=settings.var_dir)
    for row in rows:
        state = "ready" if row.ready else ("starting" if row.running else "down")
        print(f"{row.name:<14} {state:<9} pid {row.pid or '-':<8} {row.url}  log: {row.log_file}")
    return 0 if all(r.ready for r in rows) else 3


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="choreo", description="Event-driven choreography on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    broker = sub.add_parser("broker", help="the local Kafka broker started from Maven jars")
    broker.add_argument("action", choices=["up", "down", "status"])
    broker.set_defaults(run=_broker)

    topics = sub.add_parser("topics", help="create the catalogue's topics, report drift")
    topics.add_argument("action", choices=["apply", "list"])
    topics.set_defaults(run=_topics)

    schemas = sub.add_parser("schemas", help="check contracts for backward compatibility")
    schemas.add_argument("action", choices=["check", "release"])
    schemas.add_argument("--root", help="catalogue root (default: the project's schemas/)")
    schemas.set_defaults(run=_schemas)

    demo = sub.add_parser("demo", help="run the order saga end to end and check invariants")
    demo.add_argument(
        "--orders-per-path",
        type=int,
        default=10,
        metavar="N",
        help="orders down each saga path (default 10)",
    )
    demo.add_argument(
        "--deadline",
        type=float,
        default=180,
        metavar="S",
        help="seconds the orders may take to end (default 180)",
    )
    demo.add_argument("--keep", action="store_true", help="leave the services running")
    demo.set_defaults(run=_demo)

    up = sub.add_parser("up", help="start the broker, topics and all services")
    up.set_defaults(run=_up)
    down = sub.add_parser("down", help="stop all services (and the broker with --broker)")
    down.add_argument("--broker", action="store_true", help="stop the local broker too")
    down.set_defaults(run=_down)
    ps = sub.add_parser("ps", help="which services run, where, and their logs")
    ps.set_defaults(run=_ps)
    replay = sub.add_parser("replay", help="rebuild a projection beside the live one, then switch")
    replay.add_argument("projection", help="projection name (the query service's: query)")
    replay.add_argument(
        "--verify",
        action="store_true",
        help="rebuild to the side and report differences; do not switch",
    )
    replay.add_argument(
        "--readers",
        type=int,
        metavar="N",
        help="reader processes that decode while the replay writes (0: none; "
        "default: one per core, at most 4)",
    )
    replay.set_defaults(run=_replay)
    cli_ops.register(sub)
    cli_outbox.register(sub)
    cli_publish.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = PlatformSettings()
    except Exception as exc:  # pydantic's ValidationError: name the setting, one line
        print(f"choreo: error: bad setting {settings_error(exc)}", file=sys.stderr)
        return 2
    command: Command = args.run
    try:
        return command(args, settings)
    except (CliError, OpsError) as exc:
        print(f"choreo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("choreo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
