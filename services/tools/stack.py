"""The ``choreo`` command with the reference system's commands: ``demo`` (the main job),
``up``, ``down`` and ``ps``, on top of the platform's commands in :mod:`events.cli.main`.
This is the ``choreo`` script's entrypoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from events.catalogue import Catalogue
from events.cli import main as platform
from events.cli.errors import BROKER_ERRORS, USAGE, CliError, broker_unreachable
from events.settings import PlatformSettings
from events.supervisor import SupervisorError, load_manifest, start, status, stop, wait_ready
from events.topics import TopicError
from infra.broker import BrokerError, default_spec, down, up


def _demo(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from services.tools.demo import run_demo

    if args.orders_per_path < 1:
        raise CliError("--orders-per-path must be at least 1", USAGE)
    return run_demo(settings, args.orders_per_path, args.deadline, args.keep)


def _up(args: argparse.Namespace, settings: PlatformSettings) -> int:
    try:
        st = up(default_spec())
        print(f"broker running at {st.bootstrap}")
        catalogue = Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
        topics = list(catalogue.topics.values())
        asyncio.run(platform.apply_bounded(settings.kafka_bootstrap_servers, topics))
        specs = load_manifest()
        start(specs, var_dir=settings.var_dir, bootstrap=settings.kafka_bootstrap_servers)
        wait_ready(specs, var_dir=settings.var_dir)
    except (BrokerError, SupervisorError, TopicError) as exc:
        raise CliError(str(exc)) from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(settings.kafka_bootstrap_servers, exc) from None
    for spec in specs:
        print(
            f"{spec.name:<14} http://127.0.0.1:{spec.port}   log: "
            f"{settings.var_dir / 'logs' / (spec.name + '.log')}"
        )
    return 0


def _down(args: argparse.Namespace, settings: PlatformSettings) -> int:
    stopped = stop(load_manifest(), var_dir=settings.var_dir)
    print(f"stopped: {', '.join(stopped) or 'no services were running'}")
    if args.broker:
        print("broker stopped" if down(default_spec()) else "broker was not running")
    return 0


def _ps(args: argparse.Namespace, settings: PlatformSettings) -> int:
    rows = status(load_manifest(), var_dir=settings.var_dir)
    for row in rows:
        state = "ready" if row.ready else ("starting" if row.running else "down")
        if args.output == "json":
            doc = {"service": row.name, "state": state, "pid": row.pid, "url": row.url}
            print(json.dumps({**doc, "log": str(row.log_file)}))
        else:
            print(
                f"{row.name:<14} {state:<9} pid {row.pid or '-':<8} {row.url}  log: {row.log_file}"
            )
    return 0 if all(r.ready for r in rows) else 3


def register(sub: Any) -> None:
    """Add demo, up, down and ps to ``choreo``'s subcommands."""
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

    up_ = sub.add_parser("up", help="start the broker, topics and all services")
    up_.set_defaults(run=_up)
    down_ = sub.add_parser("down", help="stop all services (and the broker with --broker)")
    down_.add_argument("--broker", action="store_true", help="stop the local broker too")
    down_.set_defaults(run=_down)
    ps = sub.add_parser("ps", help="which services run, where, and their logs")
    ps.add_argument("--output", choices=["text", "json"], default="text")
    ps.set_defaults(run=_ps)


def main(argv: Sequence[str] | None = None) -> int:
    return platform.main(argv, extra=(register,))


if __name__ == "__main__":
    sys.exit(main())
