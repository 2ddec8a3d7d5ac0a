"""``choreo registry up|down|status [--storage memory|file]``: the local schema registry,
Apicurio Registry started from its Maven Central release (:mod:`infra.registry` does the work;
this module parses and prints). Clients speak its Confluent-compatible API at
``<url>/apis/ccompat/v7``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from events.cli.errors import USAGE, CliError
from events.cli.output import add_output_option, print_document
from events.settings import PlatformSettings

NOT_RUNNING = 3  # `registry status` of a stopped registry, as `broker status` of a stopped one


def registry_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # Imported when run: the registry module resolves the app and java, which no other
    # command needs.
    from infra.registry import RegistryError, default_spec, down, status, up

    try:
        spec = default_spec(storage=args.storage)
    except RegistryError as exc:  # CHOREO_REGISTRY_PORT is no port: a bad setting
        raise CliError(str(exc), USAGE) from None
    try:
        if args.action == "up":
            st = up(spec)
            where = f"in {spec.data_dir}" if st.storage == "file" else "in memory"
            print(f"schema registry running (pid {st.pid}) at {st.url}; schemas {where}")
            print(f"Confluent-compatible API: {spec.ccompat_url}; log: {st.log_file}")
        elif args.action == "down":
            print("schema registry stopped" if down(spec) else "schema registry was not running")
        else:
            st = status(spec)
            doc = {
                "running": st.running,
                "pid": st.pid,
                "url": st.url,
                "ccompat_url": spec.ccompat_url,
                "storage": st.storage,
                "log_file": str(st.log_file),
            }
            print_document(args.output, doc, _status_lines)
            return 0 if st.running else NOT_RUNNING
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    return 0


def _status_lines(doc: dict[str, Any]) -> Iterator[str]:
    if doc["running"]:
        state = f"running (pid {doc['pid']}, {doc['storage']} storage)"
    elif doc["pid"] is not None:
        state = f"starting or not answering (pid {doc['pid']})"
    else:
        state = "stopped"
    yield f"schema registry {state} at {doc['url']}; log: {doc['log_file']}"


def register(sub: Any) -> None:
    registry = sub.add_parser(
        "registry", help="the local schema registry (Apicurio, Confluent-compatible API)"
    )
    registry.add_argument("action", choices=["up", "down", "status"])
    registry.add_argument(
        "--storage",
        choices=["memory", "file"],
        default="memory",
        help="up: schemas in memory (default, gone at down) or in var/registry/data (kept)",
    )
    add_output_option(registry)
    registry.set_defaults(run=registry_command)
