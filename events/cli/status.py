"""``choreo status``: per instance of each service (as many as ``choreo up --replicas N``
last started), whether it is up and ready, its consumer lag, outbox backlog, quarantined
rows and parked events, and per service its dead letters. Read from each instance's
``/health``, ``/ready`` and ``/metrics`` (parsed by prometheus_client's own parser) and from
the dead-letter topics; a broker or instance that is down is a status, not an error."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx

from events.cli.dlq import dead_letter_topics
from events.cli.output import add_output_option, print_document
from events.dlq import DLQ_CONSUMER
from events.dlq_admin import read_dead_letters
from events.settings import PlatformSettings
from events.supervisor import load_manifest, recorded_replicas, replicate

SOME_DOWN = 3  # a service is down: scripts can wait on `choreo status` for the stack

# The column each metric fills (summed over its labels: partitions, topics).
METRICS = {
    "lag": "choreo_consumer_lag",
    "backlog": "choreo_outbox_backlog",
    "oldest_s": "choreo_outbox_oldest_age_seconds",
    "quarantined": "choreo_outbox_quarantine_rows",
    "parked": "choreo_parked_events",
}


def metric_sums(text: str) -> dict[str, float]:
    """Each sample name's sum over its labels; empty for text that is not the exposition
    format (a service too old to have /metrics answers 404's body, say)."""
    # Imported here: prometheus_client's package sets up its default registry and
    # collectors, start-up time that only this command needs.
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not math.isnan(sample.value):
                    sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    except ValueError:
        return {}
    return sums


def _probe(port: int, auth: dict[str, str]) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{base}/health", timeout=2.0)
        ready = httpx.get(f"{base}/ready", timeout=2.0)
        # /metrics is for operators: a token signed with this machine's key, when it has one.
        metrics = httpx.get(f"{base}/metrics", timeout=2.0, headers=auth).text
    except httpx.HTTPError:
        return {"up": False}
    sums = metric_sums(metrics)
    return {
        "up": health.status_code == 200,
        "ready": ready.status_code == 200,
        **{column: sums.get(name) for column, name in METRICS.items()},
        "not_ready": _not_ready(ready),
    }


def _not_ready(ready: httpx.Response) -> list[str]:
    """The reasons /ready gives for a 503 (none for older services that give none)."""
    if ready.status_code == 200:
        return []
    try:
        body = ready.json()
    except ValueError:
        return []
    reasons = body.get("reasons") if isinstance(body, dict) else None
    return [str(r) for r in reasons] if isinstance(reasons, list) else []


def _dead_letters_per_consumer(settings: PlatformSettings) -> tuple[Counter[str], str]:
    topics = dead_letter_topics(settings)  # a catalogue that cannot load is an error
    try:
        letters = asyncio.run(read_dead_letters(settings.kafka_connection(), topics))
    except Exception as exc:  # the broker being down is a status, not a crash
        return Counter(), f"unreachable ({type(exc).__name__})"
    return Counter(x.headers.get(DLQ_CONSUMER, "?") for x in letters), "reachable"


def status_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    per_consumer, kafka = _dead_letters_per_consumer(settings)
    from events.auth import local_operator_headers  # PyJWT: only for this command

    auth = local_operator_headers(settings.var_dir, os.environ)
    # Every instance `choreo up` started: instances of a service share its consumer group,
    # so its dead letters are the service's (the same count on each of its rows).
    plan = replicate(load_manifest(), recorded_replicas(settings.var_dir))
    rows = [
        {
            "service": spec.service_name,
            "instance": spec.name,
            "port": spec.port,
            **_probe(spec.port, auth),
            "dead_letters": per_consumer.get(settings.topic_prefix + spec.service_name, 0),
        }
        for spec in plan
    ]
    doc = {"kafka": kafka, "bootstrap": settings.kafka_bootstrap_servers, "services": rows}
    print_document(args.output, doc, _table)
    return 0 if all(r["up"] for r in rows) else SOME_DOWN


def _table(doc: dict[str, Any]) -> Iterator[str]:
    yield f"kafka {doc['bootstrap']}: {doc['kafka']}"
    yield (
        f"{'service':<16} {'port':>5} {'state':<9} {'lag':>6} {'outbox':>7} {'oldest':>8} "
        f"{'quar':>5} {'parked':>6} {'dlq':>5}"
    )
    seen: set[str] = set()
    for r in doc["services"]:
        state = ("ready" if r.get("ready") else "up") if r["up"] else "down"
        # The service's dead letters once, on its first instance's row: not a sum to make.
        dlq = "" if r["service"] in seen else r["dead_letters"]
        seen.add(r["service"])
        yield (
            f"{r.get('instance', r['service']):<16} {r['port']:>5} {state:<9} "
            f"{_n(r.get('lag')):>6} {_n(r.get('backlog')):>7} {_s(r.get('oldest_s')):>8} "
            f"{_n(r.get('quarantined')):>5} {_n(r.get('parked')):>6} {dlq:>5}"
        )
        for reason in r.get("not_ready") or ():
            yield f"{'':<16} not ready: {reason}"


def _n(v: float | None) -> str:
    return "-" if v is None else str(int(v))


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def register(sub: Any) -> None:
    st = sub.add_parser(
        "status", help="per service instance: up, consumer lag, outbox backlog, DLQ"
    )
    add_output_option(st)
    st.set_defaults(run=status_command)
