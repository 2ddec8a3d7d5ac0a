"""``choreo dlq list|show|redrive|release``: dead letters on the ``.dlq`` topics, the keys
they block in the consumers' databases, re-publishing them, and releasing a blocked key
(:mod:`events.dlq_admin` does the work; this module parses and prints)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

from events.catalogue import dead_letter_topic
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import (
    BROKER_ERRORS,
    DATABASE_ERRORS,
    CliError,
    broker_unreachable,
    database_unreachable,
)
from events.cli.output import add_output_option, as_indented_json, print_rows
from events.dlq import DLQ_CONSUMER
from events.dlq_admin import (
    ConsumerDatabase,
    DeadLetter,
    RedriveRefused,
    consumer_databases,
    parse_id,
    read_blocks,
    read_dead_letters,
    redrive,
    redrive_plan,
    release,
)
from events.encoding import make_codec
from events.parking import BlockedKey
from events.settings import PlatformSettings
from events.supervisor import load_manifest
from events.topics import TopicError

NOT_DONE = 3  # `dlq release` asked for, but the consumer has not applied it yet


def dead_letter_topics(settings: PlatformSettings) -> list[str]:
    return [dead_letter_topic(t) for t in load_catalogue(settings).topics]


def _letters(settings: PlatformSettings, topic: str | None) -> list[DeadLetter]:
    topics = dead_letter_topics(settings)
    if topic:
        wanted = topic if topic.endswith(".dlq") else dead_letter_topic(topic)
        if wanted not in topics:
            raise CliError(f"no dead-letter topic {wanted}; known: {', '.join(topics)}")
        topics = [wanted]
    kafka = settings.kafka_connection()
    try:
        return asyncio.run(read_dead_letters(kafka, topics))
    except TopicError as exc:
        raise CliError(str(exc)) from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(kafka, exc) from None


def _consumer_databases(settings: PlatformSettings) -> list[ConsumerDatabase]:
    return consumer_databases(
        [spec.name for spec in load_manifest() if not spec.stand_in],
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
    rows: list[dict[str, Any]] = []
    for letter in letters:
        row: dict[str, Any] = letter.summary()
        block = by_event.get((row["consumer"], row["event_id"]))
        if block is not None:  # this letter holds its key's later events back
            row.update(blocked_key=block.key, parked=block.parked)
        rows.append(row)
    if args.output == "json":
        # Blocks whose letter is not in the topic any more are rows of their own.
        shown = {(row["consumer"], row["event_id"]) for row in rows}
        alone = [_block_row(b) for key, b in by_event.items() if key not in shown]
        print_rows("json", rows + alone, str)
    else:
        print_rows("text", rows, _letter_line)
        print(f"{len(letters)} dead letter(s)")
        print("".join(f"{line}\n" for line in _blocked_lines(blocked)), end="")
    for line in problems:
        print(line, file=sys.stderr)
    return 0


def _letter_line(s: dict[str, Any]) -> str:
    holds = f"  [blocks key {s['blocked_key']}: {s['parked']} parked]" if "parked" in s else ""
    return (
        f"{s['id']}  {s['event_type']} {s['event_id']}  from {s['origin']}  "
        f"by {s['consumer']}: {s['error']}: {s['reason'][:120]}{holds}"
    )


def _blocked_lines(blocked: list[BlockedKey]) -> Iterator[str]:
    if not blocked:
        return
    yield (
        f"{len(blocked)} blocked key(s): their later events wait, parked, until the first "
        "is re-driven and applies (or `choreo dlq release CONSUMER KEY` skips it)"
    )
    for b in blocked:
        state = " (release requested)" if b.released else ""
        yield (
            f"  {b.consumer}  key {b.key}: {b.parked} parked behind {b.event_id} "
            f"from {b.origin}{state}: {b.reason[:120]}"
        )


def _block_row(b: BlockedKey) -> dict[str, Any]:
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
        return NOT_DONE
    print(f"released key {args.key}: {args.consumer} applied its parked events")
    if outcome.blocked_again_by:
        print(f"a parked event failed for good and blocks the key now: {outcome.blocked_again_by}")
    return 0


def _chosen(args: argparse.Namespace, settings: PlatformSettings) -> list[DeadLetter]:
    """The dead letters ``args.ids`` name, each one there; CliError naming the others."""
    try:
        ids = [parse_id(i) for i in args.ids]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    by_id = {(x.dlq_topic, x.partition, x.offset): x for x in _letters(settings, None)}
    missing = [f"{t}:{p}:{o}" for t, p, o in ids if (t, p, o) not in by_id]
    if missing:
        raise CliError(f"no such dead letter: {', '.join(missing)} (see `choreo dlq list`)")
    return [by_id[i] for i in ids]


def _dlq_show(args: argparse.Namespace, settings: PlatformSettings) -> int:
    chosen = _chosen(args, settings)
    codec = make_codec(load_catalogue(settings), settings.schema_encoding())
    rows = [
        {
            **letter.summary(),
            "headers": letter.headers,
            "key": (letter.record.key or b"").decode(errors="replace"),
            "payload": letter.describe_payload(codec),
        }
        for letter in chosen
    ]
    print_rows(args.output, rows, as_indented_json)
    return 0


def _dlq_redrive(args: argparse.Namespace, settings: PlatformSettings) -> int:
    chosen = _chosen(args, settings)
    codec = make_codec(load_catalogue(settings), settings.schema_encoding())
    if args.dry_run:
        try:
            plan = redrive_plan(chosen, codec)
        except RedriveRefused as exc:
            raise CliError(f"would not re-drive: {exc}") from None
        for letter, target in plan:
            print(f"would re-publish {letter.id} to {target}")
        return 0
    kafka = settings.kafka_connection()
    try:
        done = asyncio.run(redrive(kafka, chosen, codec))
    except RedriveRefused as exc:  # nothing was published
        raise CliError(f"not re-driven, nothing published: {exc}") from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(kafka, exc) from None
    for line in done:
        print(f"re-published {line}")
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("dlq", help="inspect and re-drive dead letters")
    d_sub = d.add_subparsers(dest="action", required=True, parser_class=type(d))
    ls = d_sub.add_parser("list", help="every dead letter, with reason and origin")
    ls.add_argument("--topic", help="an event topic or its .dlq topic")
    ls.add_argument("--consumer", help="only letters dead-lettered by this consumer")
    add_output_option(ls)
    ls.set_defaults(run=_dlq_list)
    show = d_sub.add_parser("show", help="headers and decoded payload of dead letters")
    show.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    add_output_option(show)
    show.set_defaults(run=_dlq_show)
    rd = d_sub.add_parser(
        "redrive",
        help="re-publish dead letters to the topic of their .dlq topic, each checked against "
        "the catalogue first",
    )
    rd.add_argument("ids", nargs="+", metavar="TOPIC:PARTITION:OFFSET")
    rd.add_argument("--dry-run", action="store_true")
    rd.set_defaults(run=_dlq_redrive)
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
    rel.set_defaults(run=_dlq_release)
