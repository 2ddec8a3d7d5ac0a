"""``choreo broker up|down|status|env [--secure | --nodes N]``: the local Kafka broker started
from Maven jars (:mod:`infra.broker` does the work; this module parses and prints). ``--secure``
is the secured broker beside it (SASL_SSL + SCRAM-SHA-512, ACLs enforced), with one principal
per party the catalogue names; ``env`` prints a principal's connection as shell variables.
``--nodes 3`` is the local three-node KRaft cluster (:mod:`infra.cluster`) instead."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from typing import Any

from events.acls import parties
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import USAGE, CliError
from events.cli.output import add_output_option, print_document
from events.settings import PlatformSettings

NOT_RUNNING = 3  # `broker status` of a stopped broker, as `choreo status` of a down service


def broker_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # Imported when run: the broker module resolves jars and java, which no other command needs.
    from infra.broker import ADMIN, BrokerError, default_spec, down, status, up

    if args.nodes != 1:
        return _cluster_command(args)
    secure = args.secure or args.action == "env"
    try:
        principals = parties(load_catalogue(settings).topics.values()) if secure else ()
        spec = default_spec(secure=secure, principals=principals)  # raises for a bad port
        what = "secured broker" if secure else "broker"
        if args.action == "up":
            st = up(spec)
            print(f"{what} running (pid {st.pid}) at {st.bootstrap}; log: {st.log_file}")
            if secure:
                print(
                    f"SASL_SSL + SCRAM-SHA-512, CA {spec.ca_file}; passwords in "
                    f"{spec.credentials_file}; a principal's settings: "
                    f"`choreo broker env --principal {ADMIN}`"
                )
        elif args.action == "down":
            print(f"{what} stopped" if down(spec) else f"{what} was not running")
        elif args.action == "env":
            name = args.principal or ADMIN
            if not spec.credentials_file.exists():
                raise CliError("the secured broker was never started: choreo broker up --secure")
            if name not in spec.passwords():
                known = ", ".join(spec.passwords())
                raise CliError(f"no principal {name!r} on the secured broker ({known})", USAGE)
            # Asked for explicitly, for a shell or an .env file: the one place a password
            # is printed.
            for key, value in spec.environment(name).items():
                print(f"{key}={shlex.quote(value)}")
        else:
            st = status(spec)
            state = f"running (pid {st.pid})" if st.running else "stopped"
            print(f"{what} {state} at {st.bootstrap}; log: {st.log_file}")
            return 0 if st.running else NOT_RUNNING
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    return 0


def _cluster_command(args: argparse.Namespace) -> int:
    from infra.broker import BrokerError
    from infra.cluster import cluster_status, default_cluster, down_cluster, up_cluster

    if args.secure:
        raise CliError("--secure runs one node; the cluster (--nodes) is plaintext", USAGE)
    try:
        spec = default_cluster(args.nodes)
        if args.action == "up":
            up_cluster(spec)
            print(f"cluster of {args.nodes} nodes running at {spec.bootstrap}; logs in {spec.home}")
            print(f"its settings: KAFKA_BOOTSTRAP_SERVERS={spec.bootstrap}")
        elif args.action == "down":
            stopped = down_cluster(spec)
            print(f"{stopped} of {args.nodes} nodes were running; stopped")
        elif args.action == "env":
            print(f"KAFKA_BOOTSTRAP_SERVERS={shlex.quote(spec.bootstrap)}")
            print("KAFKA_SECURITY_PROTOCOL=PLAINTEXT")
        else:
            st = cluster_status(spec)
            doc = {
                "nodes": [
                    {
                        "node_id": n.node_id,
                        "running": n.running,
                        "pid": n.pid,
                        "bootstrap": n.bootstrap,
                        "log_file": str(n.log_file),
                    }
                    for n in st.nodes
                ],
                "brokers": st.brokers,
                "controller": st.controller,
                "under_replicated": st.under_replicated,
            }
            print_document(args.output, doc, _cluster_lines)
            return 0 if st.running else NOT_RUNNING
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    return 0


def _cluster_lines(doc: dict[str, Any]) -> Iterator[str]:
    for node in doc["nodes"]:
        state = f"running (pid {node['pid']})" if node["running"] else "stopped"
        leader = " (active controller)" if node["node_id"] == doc["controller"] else ""
        yield f"node {node['node_id']} {state} at {node['bootstrap']}{leader}"
    under = doc["under_replicated"]
    yield f"brokers in the metadata: {doc['brokers'] or 'none'}"
    yield f"under-replicated partitions: {len(under)}" + (f" ({', '.join(under)})" if under else "")


def _nodes(text: str) -> int:
    value = int(text)
    if value != 1 and value < 3:
        raise argparse.ArgumentTypeError("1 (the single broker) or 3 or more (a cluster)")
    return value


def register(sub: Any) -> None:
    broker = sub.add_parser("broker", help="the local Kafka broker started from Maven jars")
    broker.add_argument("action", choices=["up", "down", "status", "env"])
    broker.add_argument(
        "--secure",
        action="store_true",
        help="the secured broker (SASL_SSL, SCRAM-SHA-512, ACLs) in var/kafka-secure on 9094",
    )
    broker.add_argument(
        "--principal",
        metavar="NAME",
        help="env: whose connection to print (default admin; services by name, operator)",
    )
    broker.add_argument(
        "--nodes",
        type=_nodes,
        default=1,
        help="3: the local KRaft cluster in var/kafka-cluster, clients on 9192/9194/9196",
    )
    add_output_option(broker)
    broker.set_defaults(run=broker_command)
