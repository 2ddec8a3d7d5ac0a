"""Operator commands: `choreo status` and `choreo dlq list|show|redrive`."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

import httpx

from events.catalogue import Catalogue, dead_letter_topic
from events.codec import AvroCodec
from events.dlq import DLQ_CONSUMER
from events.dlq_admin import DeadLetter, parse_id, read_dead_letters, redrive
from events.settings import PlatformSettings
from events.supervisor import load_manifest


class OpsError(Exception):
    """Reported by the CLI as one line."""


def _catalogue(settings: PlatformSettings) -> Catalogue:
    return Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)


def _dlq_topics(settings: PlatformSettings) -> list[str]:
    return [dead_letter_topic(t) for t in _catalogue(settings).topics]


def _metric_sum(text: str, name: str) -> float | None:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    ]
    return sum(values) if values else None


def _probe(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{base}/health", timeout=2.0)
        ready = httpx.get(f"{base}/ready", timeout=2.0)
        metrics = httpx.get(f"{base}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return {"up": False}
    return {
        "up": health.status_code == 200,
        "ready": ready.status_code == 200,
        "lag": _metric_sum(metrics, "choreo_consumer_lag"),
        "backlog": _metric_sum(metrics, "choreo_outbox_backlog"),
        "oldest_s": _metric_sum(metrics, "choreo_outbox_oldest_age_seconds"),
        "quarantined": _metric_sum(metrics, "choreo_outbox_quarantine_rows"),
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


def status(args: argparse.Namespace, settings: PlatformSettings) -> int:
    try:
        letters = asyncio.run(
            read_dead_letters(settings.kafka_bootstrap_servers, _dlq_topics(settings))
        )
        per_consumer = Counter(x.headers.get(DLQ_CONSUMER, "?") for x in letters)
        kafka = "reachable"
    except Exception as exc:  # the broker being down is a status, not a crash
        per_consumer, kafka = Counter(), f"unreachable ({type(exc).__name__})"
    rows = []
    for spec in load_manifest():
        probe = _probe(spec.port)
        name = settings.topic_prefix + spec.name
        rows.append(
            {
                "service": spec.name,
                "port": spec.port,
                **probe,
                "dead_letters": per_consumer.get(name, 0),
            }
        )
    if args.output == "json":
        print(json.dumps({"kafka": kafka, "services": rows}))
    else:
        print(f"kafka {settings.kafka_bootstrap_servers}: {kafka}")
        print(
            f"{'service':<14} {'state':<9} {'lag':>6} {'outbox':>7} {'oldest':>8} "
            f"{'quar':>5} {'dlq':>5}"
        )
        for r in rows:
            state = ("ready" if r.get("ready") else "up") if r["up"] else "down"
            print(
                f"{r['service']:<14} {state:<9} {_n(r.get('lag')):>6} "
                f"{_n(r.get('backlog')):>7} {_s(r.get('oldest_s')):>8} "
                f"{_n(r.get('quarantined')):>5} {r['dead_letters']:>5}"
            )
            for reason in r.get("not_ready") or ():
                print(f"{'':<14} not ready: {reason}")
    return 0 if all(r["up"] for r in rows) else 3


def _n(v: float | None) -> str:
    return "-" if v is None else str(int(v))


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def _letters(settings: PlatformSettings, topic: str | None) -> list[DeadLetter]:
    topics = _dlq_topics(settings)
    if topic:
        wanted = topic if topic.endswith(".dlq") else dead_letter_topic(topic)
        if wanted not in topics:
            raise OpsError(f"no dead-letter topic {wanted}; known: {', '.join(topics)}")
        topics = [wanted]
    return asyncio.run(read_dead_letters(settings.kafka_bootstrap_servers, topics))


def dlq(args: argparse.Namespace, settings: PlatformSettings) -> int:
    if args.action == "list":
        letters = _letters(settings, args.topic)
        if args.consumer:
            letters = [x for x in letters if x.headers.get(DLQ_CONSUMER) == args.consumer]
        for letter in letters:
            s = letter.summary()
            if args.output == "json":
                print(json.dumps(s))
            else:
                print(
                    f"{s['id']}  {s['event_type']} {s['event_id']}  from {s['origin']}  "
                    f"by {s['consumer']}: {s['error']}: {s['reason'][:120]}"
                )
        if args.output != "json":
            print(f"{len(letters)} dead letter(s)")
        return 0
    try:
        ids = [parse_id(i) for i in args.ids]
    except ValueError as exc:
        raise OpsError(str(exc)) from None
    letters = _letters(settings, None)
    by_id = {(x.dlq_topic, x.partition, x.offset): x for x in letters}
    missing = [f"{t}:{p}:{o}" for t, p, o in ids if (t, p, o) not in by_id]
    if missing:
        raise OpsError(f"no such dead letter: {', '.join(missing)} (see `choreo dlq list`)")
    chosen = [by_id[i] for i in ids]
    if args.action == "show":
        codec = AvroCodec(_catalogue(settings))
        for letter in chosen:
            print(
                json.dumps(
                    {
                        **letter.summary(),
                        "headers": letter.headers,
                        "key": (letter.record.key or b"").decode(errors="replace"),
                        "payload": letter.describe_payload(codec),
                    },
                    indent=2,
                    default=str,
                )
            )
        return 0
    if args.dry_run:
        for letter in chosen:
            print(f"would re-publish {letter.id} to {letter.summary()['origin']}")
        return 0
    for line in asyncio.run(redrive(settings.kafka_bootstrap_servers, chosen)):
        print(f"re-published {line}")
    return 0


def register(sub: Any) -> None:
    st = sub.add_parser("status", help="per service: up, consumer lag, outbox backlog, DLQ")
    st.add_argument("--output", choices=["text", "json"], default="text")
    st.set_defaults(run=status)

    d = sub.add_parser("dlq", help="inspect and re-drive dead letters")
    d_sub = d.add_subparsers(dest="action", required=True, parser_class=sub._parser_class)
    ls = d_sub.add_parser("list", help="every dead letter, with reason and origin")
    ls.add_argument("--topic", help="an event topic or its .dlq topic")
    ls.add_argument("--consumer", help="only letters dead-lettered by this consumer")
    ls.add_argument("--output", choices=["text", "json"], default="text")
    show = d_sub.add_parser("show", help="headers and decoded payload of dead letters")
    show.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    rd = d_sub.add_parser("redrive", help="re-publish dead letters to their original topic")
    rd.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    rd.add_argument("--dry-run", action="store_true")
    for p in (ls, show, rd):
        p.set_defaults(run=dlq)
