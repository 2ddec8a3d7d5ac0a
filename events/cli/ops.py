"""Operator commands: `choreo status` and `choreo dlq list|show|redrive|release`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from typing import Any

import httpx

from events.catalogue import Catalogue, dead_letter_topic
from events.cli.errors import (
    BROKER_ERRORS,
    DATABASE_ERRORS,
    CliError,
    broker_unreachable,
    database_unreachable,
)
from events.codec import AvroCodec
from events.dlq import DLQ_CONSUMER
from events.dlq_admin import (
    ConsumerDatabase,
    DeadLetter,
    consumer_databases,
    parse_id,
    read_blocks,
    read_dead_letters,
    redrive,
    release,
)
from events.parking import BlockedKey
from events.settings import PlatformSettings
from events.supervisor import load_manifest
from events.topics import TopicError


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
        "parked": _metric_sum(metrics, "choreo_parked_events"),
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
            f"{'quar':>5} {'parked':>6} {'dlq':>5}"
        )
        for r in rows:
            state = ("ready" if r.get("ready") else "up") if r["up"] else "down"
            print(
                f"{r['service']:<14} {state:<9} {_n(r.get('lag')):>6} "
                f"{_n(r.get('backlog')):>7} {_s(r.get('oldest_s')):>8} "
                f"{_n(r.get('quarantined')):>5} {_n(r.get('parked')):>6} {r['dead_letters']:>5}"
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
            raise CliError(f"no dead-letter topic {wanted}; known: {', '.join(topics)}")
        topics = [wanted]
    bootstrap = settings.kafka_bootstrap_servers
    try:
        return asyncio.run(read_dead_letters(bootstrap, topics))
    except TopicError as exc:
        raise CliError(str(exc)) from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(bootstrap, exc) from None


def _consumer_databases(settings: PlatformSettings) -> list[ConsumerDatabase]:
    return consumer_databases(
        [spec.name for spec in load_manifest()],
        topic_prefix=settings.topic_prefix,
        var_dir=settings.var_dir,
        environ=os.environ,
    )


def _dlq_list(args: argparse.Namespace, settings: PlatformSettings) -> int:
    letters = _letters(settings, args.topic)
    if args.consumer:
        letters = [x for x in letters if x.headers.get(DLQ_CONSUMER) == args.consumer]
    found, problems = asyncio.run(read_blocks(_consumer_databases(settings)))
    blocked = [
        b
        for b in found
        if (not args.consumer or b.consumer == args.consumer)
        and (not args.topic or b.origin.startswith(args.topic.removesuffix(".dlq") + "["))
    ]
    by_event = {(b.consumer, b.event_id): b for b in blocked}
    shown: set[tuple[str, str]] = set()
    for letter in letters:
        s: dict[str, Any] = letter.summary()
        block = by_event.get((s["consumer"], s["event_id"]))
        if block is not None:  # this letter holds its key's later events back
            shown.add((block.consumer, block.event_id))
            s.update(blocked_key=block.key, parked=block.parked)
        if args.output == "json":
            print(json.dumps(s))
        else:
            holds = "" if block is None else f"  [blocks key {block.key}: {block.parked} parked]"
            print(
                f"{s['id']}  {s['event_type']} {s['event_id']}  from {s['origin']}  "
                f"by {s['consumer']}: {s['error']}: {s['reason'][:120]}{holds}"
            )
    if args.output == "json":
        for b in blocked:  # blocks whose letter is not in the topic any more
            if (b.consumer, b.event_id) not in shown:
                print(json.dumps(_block_json(b)))
        return 0
    print(f"{len(letters)} dead letter(s)")
    if blocked:
        print(
            f"{len(blocked)} blocked key(s): their later events wait, parked, until the first "
            "is re-driven and applies (or `choreo dlq release CONSUMER KEY` skips it)"
        )
        for b in blocked:
            state = " (release requested)" if b.released else ""
            print(
                f"  {b.consumer}  key {b.key}: {b.parked} parked behind {b.event_id} "
                f"from {b.origin}{state}: {b.reason[:120]}"
            )
    for line in problems:
        print(line, file=sys.stderr)
    return 0


def _block_json(b: BlockedKey) -> dict[str, Any]:
    return {
        "id": None,
        "consumer": b.consumer,
        "event_id": b.event_id,
        "origin": b.origin,
        "reason": b.reason,
        "blocked_key": b.key,
        "parked": b.parked,
    }


def _dlq_release(args: argparse.Namespace, settings: PlatformSettings) -> int:
    targets = {t.consumer: t for t in _consumer_databases(settings)}
    target = targets.get(args.consumer)
    if target is None:
        raise CliError(
            f"no database known for consumer {args.consumer!r}; known: "
            f"{', '.join(targets) or 'none'} (set <SERVICE>_DATABASE_URL as for `choreo up`)"
        )
    try:
        outcome = asyncio.run(release(target, args.key, wait_s=args.wait))
    except DATABASE_ERRORS as exc:
        raise database_unreachable(target.service, target.url, exc) from None
    if outcome is None:
        raise CliError(f"{args.consumer} has no blocked key {args.key!r} (see `choreo dlq list`)")
    if not outcome.done:
        print(
            f"release of key {args.key} requested: {args.consumer} applies its "
            f"{outcome.parked} parked event(s) when it next runs (not done after {args.wait:g}s)"
        )
        return 3
    print(f"released key {args.key}: {args.consumer} applied its parked events")
    if outcome.blocked_again_by:
        print(f"a parked event failed for good and blocks the key now: {outcome.blocked_again_by}")
    return 0


def dlq(args: argparse.Namespace, settings: PlatformSettings) -> int:
    if args.action == "list":
        return _dlq_list(args, settings)
    if args.action == "release":
        return _dlq_release(args, settings)
    try:
        ids = [parse_id(i) for i in args.ids]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    letters = _letters(settings, None)
    by_id = {(x.dlq_topic, x.partition, x.offset): x for x in letters}
    missing = [f"{t}:{p}:{o}" for t, p, o in ids if (t, p, o) not in by_id]
    if missing:
        raise CliError(f"no such dead letter: {', '.join(missing)} (see `choreo dlq list`)")
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
    bootstrap = settings.kafka_bootstrap_servers
    try:
        done = asyncio.run(redrive(bootstrap, chosen))
    except ValueError as exc:  # a letter that does not say where it came from
        raise CliError(str(exc)) from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(bootstrap, exc) from None
    for line in done:
        print(f"re-published {line}")
    return 0


def register(sub: Any) -> None:
    st = sub.add_parser("status", help="per service: up, consumer lag, outbox backlog, DLQ")
    st.add_argument("--output", choices=["text", "json"], default="text")
    st.set_defaults(run=status)

    d = sub.add_parser("dlq", help="inspect and re-drive dead letters")
    d_sub = d.add_subparsers(dest="action", required=True, parser_class=type(d))
    ls = d_sub.add_parser("list", help="every dead letter, with reason and origin")
    ls.add_argument("--topic", help="an event topic or its .dlq topic")
    ls.add_argument("--consumer", help="only letters dead-lettered by this consumer")
    ls.add_argument("--output", choices=["text", "json"], default="text")
    show = d_sub.add_parser("show", help="headers and decoded payload of dead letters")
    show.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    rd = d_sub.add_parser("redrive", help="re-publish dead letters to their original topic")
    rd.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    rd.add_argument("--dry-run", action="store_true")
    rel = d_sub.add_parser(
        "release",
        help="apply a blocked key's parked events WITHOUT the dead letter that blocks it "
        "(skipped for good: re-driving it later is a duplicate)",
    )
    rel.add_argument("consumer", help="the consumer (group) name, as `choreo dlq list` shows")
    rel.add_argument("key", help="the blocked key, as `choreo dlq list` shows")
    rel.add_argument(
        "--wait", type=float, default=30.0, metavar="S", help="seconds to wait for the consumer"
    )
    for p in (ls, show, rd, rel):
        p.set_defaults(run=dlq)
