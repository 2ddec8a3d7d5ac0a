"""``choreo publish``: events from arguments or a JSON Lines file, validated against their
Avro contracts (and encoded) before any is sent, so that a file with one bad line publishes
nothing; sent by the runtime's publisher (``events.publisher.send_all``); reported as text
or JSON.

Reading and checking input is ``events.cli.payloads``, ``timestamps`` and ``preparer``'s;
progress on stderr is ``events.cli.progress``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from events.cli.catalogue_view import load_catalogue
from events.cli.errors import BROKER_ERRORS, CliError, broker_unreachable
from events.cli.output import add_output_option
from events.cli.payloads import (
    InputError,
    NoKeyError,
    compact,
    parse_fields,
    parse_json_object,
)
from events.cli.preparer import PRODUCER, Preparer, collector_skipping_kept, validate_file
from events.cli.progress import Meter
from events.codec import AvroCodec
from events.encoding import make_codec
from events.kafka import KafkaConnection, admin_client
from events.publisher import Landed, OnLanded, Outgoing, PublishError, send_all
from events.settings import PlatformSettings

__all__ = ["register", "send"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)


async def send(kafka: KafkaConnection, records: Sequence[Outgoing], on_landed: OnLanded) -> int:
    """Sends with the runtime's publisher after checking that the topics exist; CliError
    says what failed (and how many events were acknowledged before)."""
    await _require_topics(kafka, sorted({r.topic for r in records}))
    try:
        return await send_all(kafka, records, on_landed, client_id=PRODUCER)
    except PublishError as exc:
        raise CliError(str(exc)) from None


async def _require_topics(kafka: KafkaConnection, topics: list[str]) -> None:
    """Fails at once on a missing topic, where the producer would wait out its timeout."""
    admin = admin_client(kafka, client_id=PRODUCER)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except BROKER_ERRORS as exc:
        raise broker_unreachable(kafka, exc) from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise CliError(
            f"topic {', '.join(missing)} does not exist (create it with 'choreo topics apply')"
        )


def _describe(record: Outgoing, landed: Landed | None = None) -> dict[str, Any]:
    env = record.envelope
    return {
        "event_type": env.event_type,
        "event_id": env.event_id,
        "key": env.key,
        "correlation_id": env.correlation_id,
        "topic": record.topic,
        "partition": None if landed is None else landed.partition,
        "offset": None if landed is None else landed.offset,
    }


class _Report:
    """What ``publish`` prints on stdout, as text lines or JSON objects."""

    def __init__(self, output: str, codec: AvroCodec) -> None:
        self.json = output == "json"
        self.codec = codec

    def landed(self, landed: Landed) -> None:
        if self.json:
            print(compact(_describe(landed.record, landed)))
        else:
            env = landed.record.envelope
            print(
                f"{env.event_type} {env.event_id} -> "
                f"{landed.topic}[{landed.partition}]@{landed.offset}"
            )

    def would_send(self, record: Outgoing) -> None:
        # Decoded from the encoded bytes: what consumers would read, defaults included.
        payload = self.codec.decode(record.value).payload
        if self.json:
            print(compact({**_describe(record), "dry_run": True, "payload": payload}))
        else:
            env = record.envelope
            print(
                f"would publish {env.event_type} {env.event_id} -> {record.topic} "
                f"key={env.key} {compact(payload)}"
            )

    def summary(self, topics: Mapping[str, int], seconds: float, *, dry_run: bool) -> None:
        count = sum(topics.values())
        rate = count / seconds if seconds > 0 else 0.0
        if self.json:
            doc = {"events": count, "topics": dict(topics), "seconds": round(seconds, 3)}
            print(compact({**doc, "events_per_s": round(rate, 1)}))
            return
        where = ", ".join(f"{t} {n:,}" for t, n in topics.items())
        if dry_run:
            print(f"dry run: {count:,} valid events, nothing sent ({where})")
        else:
            print(f"published {count:,} events in {seconds:.2f}s ({rate:,.0f} events/s): {where}")


def _publish(args: argparse.Namespace, settings: PlatformSettings) -> int:
    codec = make_codec(load_catalogue(settings), settings.schema_encoding())
    preparer = Preparer(codec)
    report = _Report(args.output, codec)
    if args.file is not None:
        return _publish_file(args, settings, preparer, report)
    return _publish_one(args, settings, preparer, report)


def _publish_one(
    args: argparse.Namespace, settings: PlatformSettings, preparer: Preparer, report: _Report
) -> int:
    if args.event_type is None:
        raise CliError("give an EVENT_TYPE or --file (see 'choreo publish --help')")
    try:
        info = preparer.info(args.event_type)
        event_type = info.schema.event_type
    except InputError as exc:
        raise CliError(str(exc)) from None
    try:
        record = preparer.prepare(
            event_type,
            _payload_from_args(args, info.schema.raw),
            key=args.key,
            event_id=args.event_id,
            correlation_id=args.correlation_id,
        )
    except NoKeyError as exc:
        raise CliError(f"{event_type}: {exc}; give --key") from None
    except InputError as exc:
        raise CliError(f"{event_type}: {exc}") from None
    if args.dry_run:
        report.would_send(record)
        return 0
    asyncio.run(send(settings.kafka_connection(), [record], report.landed))
    return 0


def _payload_from_args(args: argparse.Namespace, schema: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] | None = None
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        base = parse_json_object(text, "--json")
    return parse_fields(args.field, schema, base)


def _publish_file(
    args: argparse.Namespace, settings: PlatformSettings, preparer: Preparer, report: _Report
) -> int:
    given = [name for name in ("event_type", "key", "json", "event_id") if getattr(args, name)]
    if given or args.field or args.correlation_id:
        raise CliError(
            "--file takes no EVENT_TYPE, --key, --field, --json, --event-id or "
            "--correlation-id: each line gives its own"
        )
    started = time.perf_counter()
    records = validate_file(args.file, preparer)
    if not records:
        raise CliError(f"{args.file}: no events in the file")
    topics: dict[str, int] = {}
    for record in records:
        topics[record.topic] = topics.get(record.topic, 0) + 1
    if args.dry_run:
        for record in records:
            report.would_send(record)
        if not report.json:  # JSON: the objects above, one per event, and nothing else
            report.summary(topics, time.perf_counter() - started, dry_run=True)
        return 0
    count = 0
    with Meter("publishing", len(records)) as meter, collector_skipping_kept():

        def landed(_: Landed) -> None:
            nonlocal count
            count += 1
            meter.update(count, count)

        asyncio.run(send(settings.kafka_connection(), records, landed))
    report.summary(topics, time.perf_counter() - started, dry_run=False)
    return 0


_PUBLISH_EPILOG = """\
timestamps: timestamp-millis fields take ISO 8601 with a timezone (2026-03-01T12:00:00Z),
'now', or epoch milliseconds; a missing timestamp field named *_at is set to now.
key: defaults to the payload's order_id, else customer_id, else sku, else its first *_id field.
--file: JSON Lines, one event a line:
  {"type": "OrderPlaced", "payload": {...}, "key": "...", "event_id": "...",
   "correlation_id": "..."}   (key, event_id and correlation_id are optional)
every record is validated before anything is sent: one bad line publishes nothing.
--output json prints one object per event (single events and every --dry-run event), or
one summary object for a --file publish.

examples:
  choreo publish StockRestocked --field restock_id=7c9e6679-7425-40de-944b-e07fc1f99a7b \\
      --field sku=widget --field quantity=5          (restocked_at: now, key: the sku)
  choreo publish OrderPlaced --json "$(cat order.json)" --field shipping_address.country=DE
  choreo publish OrderPlaced --json - < order.json --field 'lines=[{"sku": "a", ...}]'
  choreo publish --file events.jsonl --dry-run
"""


def register(sub: argparse._SubParsersAction[_P]) -> None:
    """Adds ``choreo publish`` to the sub-commands."""
    publish = sub.add_parser(
        "publish",
        help="publish events validated against their Avro contracts",
        description="Publish one event from arguments, or many from a JSON Lines file.",
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("event_type", nargs="?", metavar="EVENT_TYPE", help="e.g. OrderPlaced")
    publish.add_argument("--key", metavar="K", help="message key (default: inferred, see below)")
    publish.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a payload field; VALUE is JSON when it parses (lists, numbers), else text; "
        "dotted names for nested records (shipping_address.country=DE); repeatable",
    )
    publish.add_argument(
        "--json", metavar="DOC", help="the payload as a JSON object ('-' reads stdin)"
    )
    publish.add_argument("--file", metavar="FILE", help="JSON Lines of events ('-' reads stdin)")
    publish.add_argument("--event-id", metavar="UUID", help="event id (default: a new UUID)")
    publish.add_argument("--correlation-id", metavar="ID", help="default: the event id")
    publish.add_argument(
        "--dry-run", action="store_true", help="validate and show what would be sent; send nothing"
    )
    add_output_option(publish)
    publish.set_defaults(run=_publish)
