"""The ``choreo`` command with the reference system's commands: ``demo`` (the main job),
``up``, ``down``, ``ps`` and ``replay``, on top of the platform's commands in
:mod:`events.cli.main`. This is the ``choreo`` script's entrypoint."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from events.cli import main as platform
from events.cli.errors import USAGE, CliError
from events.cli.output import add_output_option, print_rows
from events.settings import PlatformSettings
from events.supervisor import (
    MAX_REPLICAS,
    REPLICAS_FILE,
    ProcessSpec,
    SupervisorError,
    load_manifest,
    record_replicas,
    recorded_replicas,
    replicate,
    running_plan,
    shared_sqlite,
    status,
    stop,
    upstreams,
)
from infra.gateway import GatewayError, GatewaySpec, start_gateway, stop_gateway
from services.tools import replay
from services.tools.registry import schema_env, stop_registry
from services.tools.startup import broker_and_topics, dashboard_url, start_services

SOME_DOWN = 3  # `ps` with a service not ready, as `choreo status`
GATEWAY_PORT = 8100  # below the services' ports (8101...; replicas +100 each)


def _demo(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from services.tools.demo import run_demo

    if args.orders_per_path < 1:
        raise CliError("--orders-per-path must be at least 1", USAGE)
    return run_demo(settings, args.orders_per_path, args.deadline, args.keep, args.secure)


def _up(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.auth import local_stack_auth  # PyJWT: only for the commands that start services

    specs = up_plan(args.replicas, settings)  # refused before anything starts
    kafka, catalogue, service_env = broker_and_topics(settings, args.secure)
    schemas = schema_env(settings, catalogue)  # SCHEMA_FORMAT=registry: registry, catalogue
    auth_env, secret = local_stack_auth(settings.var_dir, os.environ)
    # `ps` and `down` see every instance that may run, those of an earlier `up` included.
    record_replicas(settings.var_dir, max(args.replicas, recorded_replicas(settings.var_dir)))
    env = {**auth_env, **schemas}
    start_services(specs, settings, kafka, deadline_s=60, env=env, service_env=service_env)
    for spec in specs:
        print(
            f"{spec.name:<16} http://127.0.0.1:{spec.port}   log: "
            f"{settings.var_dir / 'logs' / (spec.name + '.log')}"
        )
    if args.replicas > 1:  # one entry point in front of the instances (nginx)
        _start_gateway(specs, settings)
    query = next((s for s in specs if s.name == "query"), None)
    if query is not None and secret is not None:
        print(f"dashboard: {dashboard_url(query.port, secret)}")
        print("tokens for the APIs: `choreo token --operator`, `choreo token --customer ID`")
    return 0


def _start_gateway(specs: Sequence[ProcessSpec], settings: PlatformSettings) -> None:
    try:
        gateway = start_gateway(upstreams(specs), GATEWAY_PORT, home=settings.var_dir / "gateway")
    except GatewayError as exc:
        raise CliError(str(exc)) from None
    print(f"{'gateway':<16} {gateway.url}   log: {gateway.error_log}")


def up_plan(replicas: int, settings: PlatformSettings) -> list[ProcessSpec]:
    """The processes `choreo up --replicas N` starts; CliError (usage) for a count out of
    range or a replicated service whose database is SQLite."""
    try:
        specs = replicate(load_manifest(), replicas)
    except SupervisorError as exc:
        raise CliError(str(exc), USAGE) from None
    refusal = shared_sqlite(specs, replicas, settings.var_dir)
    if refusal is not None:
        raise CliError(refusal, USAGE)
    return specs


def _down(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # The gateway first: no request is sent to an instance that is stopping.
    if stop_gateway(GatewaySpec(home=settings.var_dir / "gateway", port=GATEWAY_PORT)):
        print("gateway stopped")
    stopped = stop(running_plan(settings.var_dir), var_dir=settings.var_dir)
    (settings.var_dir / "run" / REPLICAS_FILE).unlink(missing_ok=True)
    print(f"stopped: {', '.join(stopped) or 'no services were running'}")
    # The registry `up` started (or, with --broker, any local one): after the services,
    # which may still be looking schemas up while they stop.
    registry = stop_registry(settings.var_dir, force=args.broker)
    if registry is not None:
        print(registry)
    if args.broker:
        from infra.broker import BrokerError, default_spec, down

        try:
            # Whichever of the two local brokers runs (plaintext, secured).
            stopped_brokers = [s for s in (False, True) if down(default_spec(secure=s))]
            for secure in stopped_brokers:
                print("secured broker stopped" if secure else "broker stopped")
            if not stopped_brokers:
                print("broker was not running")
        except BrokerError as exc:
            raise CliError(str(exc)) from None
    return 0


def _ps(args: argparse.Namespace, settings: PlatformSettings) -> int:
    rows = [
        {
            "service": row.name,
            "state": "ready" if row.ready else ("starting" if row.running else "down"),
            "pid": row.pid,
            "url": row.url,
            "log": str(row.log_file),
        }
        for row in status(running_plan(settings.var_dir), var_dir=settings.var_dir)
    ]
    print_rows(args.output, rows, _ps_line)
    return 0 if all(r["state"] == "ready" for r in rows) else SOME_DOWN


def _ps_line(r: dict[str, Any]) -> str:
    pid = r["pid"] or "-"
    return f"{r['service']:<16} {r['state']:<9} pid {pid:<8} {r['url']}  log: {r['log']}"


def _add_secure_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secure",
        action="store_true",
        help="on the local secured broker (SASL_SSL, SCRAM-SHA-512, the catalogue's ACLs), "
        "each service as its own principal",
    )


def register(sub: Any) -> None:
    """Add demo, up, down, ps and replay to ``choreo``'s subcommands."""
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
    _add_secure_option(demo)
    demo.set_defaults(run=_demo)

    up_ = sub.add_parser("up", help="start the broker, topics and all services")
    _add_secure_option(up_)
    up_.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help=f"instances of each saga service and of query, 1 to {MAX_REPLICAS} (default 1); "
        "more than one needs <NAME>_DATABASE_URL on PostgreSQL for each; instance k listens "
        "on the service's port + (k-1)*100",
    )
    up_.set_defaults(run=_up)
    down_ = sub.add_parser(
        "down",
        help="stop all services and the schema registry `up` started (and the broker with "
        "--broker)",
    )
    down_.add_argument(
        "--broker",
        action="store_true",
        help="stop the local broker and the local schema registry too",
    )
    down_.set_defaults(run=_down)
    ps = sub.add_parser("ps", help="which services run, where, and their logs")
    add_output_option(ps)
    ps.set_defaults(run=_ps)
    replay.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    return platform.main(argv, extra=(register,))


if __name__ == "__main__":
    sys.exit(main())
