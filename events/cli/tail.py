"""``choreo tail``: a topic's events printed, decoded, as they arrive (text or JSON lines).

No consumer group: nothing is committed and nobody else's offsets move. What cannot be
decoded is shown with the reason, never skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from events.cli.catalogue_view import load_catalogue
from events.cli.errors import CliError, broker_unreachable
from events.cli.output import add_output_option
from events.cli.payloads import compact
from events.codec import AvroCodec, CodecError
from events.encoding import make_codec
from events.envelope import Envelope, EnvelopeError
from events.kafka import KafkaConnection, admin_client, plain_consumer
from events.settings import PlatformSettings

__all__ = ["Shown", "decode_message", "register", "tail", "tail_topic", "topic_partitions"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)


@dataclass(frozen=True, slots=True)
class Shown:
    """One message as ``tail`` shows it; ``error`` says why it could not be decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    event_type: str | None = None
    event_id: str | None = None
    payload: dict[str, Any] | None = None
    error: str | None = None

    def text(self) -> str:
        where = f"{self.partition}@{self.offset}"
        if self.payload is None:
            return f"{where} UNDECODABLE key={self.key}: {self.error}"
        line = f"{where} {self.event_type} key={self.key} id={self.event_id or '?'} "
        line += compact(self.payload)
        return f"{line} ({self.error})" if self.error else line

    def json(self) -> str:
        return compact({k: getattr(self, k) for k in self.__slots__})


def decode_message(codec: AvroCodec, message: Any) -> Shown:
    """Never raises: what cannot be decoded is shown with the reason."""
    key = message.key.decode(errors="replace") if message.key else ""
    base = Shown(message.topic, message.partition, message.offset, key)
    if message.value is None:
        return _with(base, error="tombstone (no value)")
    try:
        decoded = codec.decode(message.value)
    except CodecError as exc:
        reason = str(exc) if "bytes" in str(exc) else f"{exc} ({len(message.value)} bytes)"
        return _with(base, error=reason)
    try:
        envelope = Envelope.from_headers(message.headers or [], message.key)
    except EnvelopeError as exc:
        return _with(base, event_type=decoded.event_type, payload=decoded.payload, error=str(exc))
    return _with(
        base, event_type=decoded.event_type, event_id=envelope.event_id, payload=decoded.payload
    )


def _with(base: Shown, **changes: Any) -> Shown:
    fields = {k: getattr(base, k) for k in base.__slots__}
    return Shown(**{**fields, **changes})


def tail_topic(topic: str, prefix: str) -> str:
    """TOPIC as the catalogue names it; ``TOPIC_PREFIX`` is added unless already there."""
    return topic if not prefix or topic.startswith(prefix) else prefix + topic


async def tail(
    kafka: KafkaConnection,
    codec: AvroCodec,
    topic: str,
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    as_json: bool = False,
    out: IO[str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Prints decoded messages as they arrive; returns how many were shown."""
    out = out or sys.stdout
    consumer = plain_consumer(
        kafka,
        group_id=None,  # no group: nothing is committed, nobody else's offsets move
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="choreo-tail",
    )
    shown = 0
    try:
        partitions = await topic_partitions(kafka, topic)
        await consumer.start()
        await _assign_all(consumer, topic, partitions, from_beginning)
        start = "the beginning" if from_beginning else "the end"
        (ready or _notice)(
            f"tailing {topic} ({len(partitions)} partitions) from {start}; Ctrl-C stops"
        )
        while max_messages is None or shown < max_messages:
            limit = None if max_messages is None else max_messages - shown
            batch = await consumer.getmany(timeout_ms=500, max_records=limit)
            for _, messages in sorted(batch.items()):
                for message in messages:
                    shown_message = decode_message(codec, message)
                    out.write((shown_message.json() if as_json else shown_message.text()) + "\n")
                    shown += 1
            out.flush()  # a pipe would otherwise hold the lines until exit
    except KafkaConnectionError as exc:
        raise broker_unreachable(kafka, exc) from None
    except KafkaError as exc:
        raise CliError(f"cannot tail {topic} at {kafka}: {exc}") from None
    finally:
        await _stop_quietly(consumer)
    return shown


async def topic_partitions(kafka: KafkaConnection, topic: str) -> list[int]:
    """The topic's partition ids; CliError (with close names) when it does not exist."""
    # The admin client, because a consumer's topics() does not fill its own metadata.
    admin = admin_client(kafka, client_id="choreo-tail")
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic not in existing:
            close = difflib.get_close_matches(topic, sorted(existing), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CliError(f"topic {topic} does not exist{hint}")
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in described["partitions"])


async def _assign_all(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int], from_beginning: bool
) -> None:
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
    for tp in tps:
        # Resolve the start now, so that whatever is published after the notice is shown.
        await consumer.position(tp)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    # A group-less aiokafka consumer can raise CancelledError from stop() when it is stopped
    # very soon after start (Ctrl-C at once); there is nothing left to clean up then.
    with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
        await consumer.stop()


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _tail(args: argparse.Namespace, settings: PlatformSettings) -> int:
    codec = make_codec(load_catalogue(settings), settings.schema_encoding())
    topic = tail_topic(args.topic, settings.topic_prefix)
    try:
        asyncio.run(
            tail(
                settings.kafka_connection(),
                codec,
                topic,
                from_beginning=args.from_beginning,
                max_messages=args.max,
                as_json=args.output == "json",
            )
        )
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a tail ends: quietly, successfully
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction[_P]) -> None:
    """Adds ``choreo tail`` to the sub-commands."""
    tail_cmd = sub.add_parser(
        "tail",
        help="print a topic's events, decoded, as they arrive",
        description="Print decoded events from TOPIC as they arrive (no consumer group: "
        "nothing is committed). TOPIC_PREFIX is added unless TOPIC has it. Ctrl-C stops.",
    )
    tail_cmd.add_argument("topic", metavar="TOPIC", help="e.g. orders.requests")
    tail_cmd.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest message, not the end"
    )
    tail_cmd.add_argument("--max", type=_positive, metavar="N", help="stop after N messages")
    add_output_option(tail_cmd)
    tail_cmd.set_defaults(run=_tail)
