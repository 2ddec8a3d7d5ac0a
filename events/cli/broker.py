"""``choreo broker up|down|status``: the local Kafka broker started from Maven jars
(:mod:`infra.broker` does the work; this module parses and prints)."""

from __future__ import annotations

import argparse
from typing import Any

from events.cli.errors import CliError
from events.settings import PlatformSettings

NOT_RUNNING = 3  # `broker status` of a stopped broker, as `choreo status` of a down service


def broker_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # Imported when run: the broker module resolves jars and java, which no other command needs.
    from infra.broker import BrokerError, default_spec, down, status, up

    try:
        spec = default_spec()  # raises for a bad CHOREO_KAFKA_PORT
        if args.action == "up":
            st = up(spec)
            print(f"broker running (pid {st.pid}) at {st.bootstrap}; log: {st.log_file}")
        elif args.action == "down":
            print("broker stopped" if down(spec) else "broker was not running")
        else:
            st = status(spec)
            state = f"running (pid {st.pid})" if st.running else "stopped"
            print(f"broker {state} at {st.bootstrap}; log: {st.log_file}")
            return 0 if st.running else NOT_RUNNING
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    return 0


def register(sub: Any) -> None:
    broker = sub.add_parser("broker", help="the local Kafka broker started from Maven jars")
    broker.add_argument("action", choices=["up", "down", "status"])
    broker.set_defaults(run=broker_command)
