"""The ``choreo`` command line: the parser, and the one place errors are printed. Every
failure is one line on stderr and a non-zero exit: commands raise
:class:`events.cli.errors.CliError`, and :func:`main` alone prints it.

Exit statuses: 0 done; 1 a failure (a bad argument value, an unreachable broker or
database, a missing topic...); 2 a bad command line or setting; 3 a status command that
found something down or not done; 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from events.catalogue import Catalogue, TopicSpec
from events.cli import ops, outbox, publish
from events.cli.errors import BROKER_ERRORS, USAGE, CliError, broker_unreachable
from events.settings import PlatformSettings, settings_error
from events.topics import TopicError, TopicReport, apply_topics


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming what is wrong, instead of argparse's usage dump.
        self.exit(USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for (the
    lookup reads the installed distributions, which every other command can skip)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("choreo")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown (not installed)"
        print(f"{parser.prog} {number}")  # on stdout, as argparse's own version action does
        parser.exit()


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
            if args.output == "json":
                print(json.dumps(_topic_json(spec)))
            else:
                print(f"{spec.name}\t{spec.partitions} partitions\t{', '.join(spec.event_types)}")
        return 0
    bootstrap = settings.kafka_bootstrap_servers
    try:
        report = asyncio.run(apply_bounded(bootstrap, specs))
    except TopicError as exc:
        raise CliError(f"topics apply: {exc}") from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(bootstrap, exc) from None
    if args.output == "json":
        print(json.dumps(_report_json(report)))
    else:
        for name in report.created:
            print(f"created   {name}")
        for name in report.unchanged:
            print(f"ok        {name}")
        for diff in report.differences:
            print(f"DIFFERS   {diff}")
    return 1 if report.differences else 0


def _topic_json(spec: TopicSpec) -> dict[str, Any]:
    return {
        "topic": spec.name,
        "partitions": spec.partitions,
        "retention_ms": spec.retention_ms,
        "event_types": list(spec.event_types),
        "configs": dict(spec.configs),
    }


def _report_json(report: TopicReport) -> dict[str, list[str]]:
    return {
        "created": report.created,
        "unchanged": report.unchanged,
        "differences": report.differences,
    }


async def apply_bounded(bootstrap: str, specs: list[TopicSpec]) -> TopicReport:
    """The catalogue's topics on the broker, or TimeoutError after a minute."""
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


# Adds commands to the subparsers (argparse has no public name for their type).
Register = Callable[[Any], None]


def build_parser(extra: Sequence[Register] = ()) -> argparse.ArgumentParser:
    """The parser of the platform's commands, plus ``extra`` ones (the reference system
    adds the commands that start its services: ``services.tools.stack``)."""
    parser = _Parser(prog="choreo", description="Event-driven choreography on Kafka.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    broker = sub.add_parser("broker", help="the local Kafka broker started from Maven jars")
    broker.add_argument("action", choices=["up", "down", "status"])
    broker.set_defaults(run=_broker)

    topics = sub.add_parser("topics", help="create the catalogue's topics, report drift")
    topics.add_argument("action", choices=["apply", "list"])
    topics.add_argument("--output", choices=["text", "json"], default="text")
    topics.set_defaults(run=_topics)

    schemas = sub.add_parser("schemas", help="check contracts for backward compatibility")
    schemas.add_argument("action", choices=["check", "release"])
    schemas.add_argument("--root", help="catalogue root (default: the project's schemas/)")
    schemas.set_defaults(run=_schemas)

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
    ops.register(sub)
    outbox.register(sub)
    publish.register(sub)
    for register in extra:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None, extra: Sequence[Register] = ()) -> int:
    args = build_parser(extra).parse_args(argv)
    try:
        settings = PlatformSettings()
    except Exception as exc:  # pydantic's ValidationError: name the setting, one line
        return _fail(CliError(f"bad setting {settings_error(exc)}", USAGE))
    command: Command = args.run
    try:
        with _kafka_logs_quiet():
            return command(args, settings)
    except CliError as exc:
        return _fail(exc)
    # A command that let the broker's or a database's failure through still fails in one
    # line (the commands name the address or service; here only the broker's is known).
    except KafkaError as exc:
        return _fail(broker_unreachable(settings.kafka_bootstrap_servers, exc))
    except SQLAlchemyError as exc:
        return _fail(CliError(f"database: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"))
    except BrokenPipeError:
        # The reader went away (`choreo events | head`): nothing is wrong, nothing to say.
        # Python's recipe: point stdout at /dev/null so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("choreo: interrupted", file=sys.stderr)
        return 130


def _fail(exc: CliError) -> int:
    print(f"choreo: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return exc.status


@contextlib.contextmanager
def _kafka_logs_quiet() -> Iterator[None]:
    # aiokafka logs its own warnings (a refused connection, a retried request) to stderr;
    # the command reports what went wrong in its one line instead.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
