"""Inspecting and re-driving dead letters (`choreo dlq ...`), and the keys they block."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from events.codec import AvroCodec, CodecError
from events.db import Database
from events.dlq import (
    DLQ_CONSUMER,
    DLQ_ERROR,
    DLQ_HEADERS,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
)
from events.envelope import CE_ID, CE_TYPE, H_EVENT_ID, H_EVENT_TYPE, headers_dict, utcnow
from events.kafka import KafkaConnection, plain_consumer, reliable_producer
from events.parking import BlockedKey, blocks, request_release
from events.supervisor import database_urls
from events.topics import partitions_of
from events.unreachable import DATABASE_ERRORS, database_unreachable


@dataclass(frozen=True)
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    record: ConsumerRecord

    @property
    def id(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"

    @property
    def headers(self) -> dict[str, str]:
        return headers_dict(self.record.headers or ())

    def summary(self) -> dict[str, str]:
        h = self.headers
        return {
            "id": self.id,
            "consumer": h.get(DLQ_CONSUMER, "?"),
            "error": h.get(DLQ_ERROR, "?"),
            "reason": h.get(DLQ_REASON, "?"),
            "origin": f"{h.get(DLQ_TOPIC, '?')}[{h.get(DLQ_PARTITION, '?')}]"
            f"@{h.get(DLQ_OFFSET, '?')}",
            # CloudEvents' on a letter that carried only those
            "event_type": h.get(H_EVENT_TYPE) or h.get(CE_TYPE, "?"),
            "event_id": h.get(H_EVENT_ID) or h.get(CE_ID, "?"),
        }

    def describe_payload(self, codec: AvroCodec) -> str:
        try:
            decoded = codec.decode(self.record.value or b"")
        except CodecError as exc:
            return f"undecodable ({exc}): {(self.record.value or b'').hex()[:400]}"
        return f"{decoded.event_type} v{decoded.writer_version}: {decoded.payload}"


async def read_dead_letters(kafka: KafkaConnection, dlq_topics: Sequence[str]) -> list[DeadLetter]:
    """Every record currently in the dead-letter topics, oldest first per partition."""
    consumer = plain_consumer(kafka, group_id="choreo-dlq-reader", enable_auto_commit=False)
    try:
        await consumer.start()  # inside: a consumer that failed to start is stopped too
        tps = await partitions_of(kafka, dlq_topics)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[DeadLetter] = []
        remaining = {tp for tp in tps if end[tp] > await consumer.position(tp)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            if not batch:
                break
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        out.append(DeadLetter(tp.topic, tp.partition, r.offset, r))
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()


class RedriveRefused(ValueError):
    """Letters that must not be re-published, each with its reason."""


def redrive_target(letter: DeadLetter, codec: AvroCodec) -> str:
    """The topic ``letter`` goes back to: the one its DLQ topic is the twin of (``X.dlq``
    -> ``X``), not what its header says (whoever can write to a DLQ topic writes the
    headers too). RedriveRefused with the reason when the header names another topic or the
    bytes are not an event the catalogue routes to that topic."""
    target = letter.dlq_topic.removesuffix(".dlq")
    spec = codec.catalogue.topics.get(target)
    if target == letter.dlq_topic or spec is None:
        raise RedriveRefused(f"{letter.id}: {letter.dlq_topic} is not the .dlq twin of a topic")
    h = letter.headers
    said = h.get(DLQ_TOPIC)
    if said != target:
        named = f"names {said}" if said else "is missing"
        raise RedriveRefused(f"{letter.id}: its {DLQ_TOPIC} header {named}, not {target}")
    try:
        decoded = codec.decode(letter.record.value or b"")
    except CodecError as exc:
        raise RedriveRefused(f"{letter.id}: not an event of the catalogue: {exc}") from None
    if decoded.event_type not in spec.event_types:
        raise RedriveRefused(f"{letter.id}: {target} does not carry {decoded.event_type}")
    name = H_EVENT_TYPE if H_EVENT_TYPE in h else CE_TYPE
    typed = h.get(name, decoded.event_type)
    if typed != decoded.event_type:
        raise RedriveRefused(
            f"{letter.id}: its {name} header says {typed}, its bytes {decoded.event_type}"
        )
    return target


def redrive_plan(letters: Sequence[DeadLetter], codec: AvroCodec) -> list[tuple[DeadLetter, str]]:
    """Each letter with its target topic; RedriveRefused naming every letter refused (all or
    nothing: one refused letter holds the others back too)."""
    plan: list[tuple[DeadLetter, str]] = []
    refused: list[str] = []
    for letter in letters:
        try:
            plan.append((letter, redrive_target(letter, codec)))
        except RedriveRefused as exc:
            refused.append(str(exc))
    if refused:
        raise RedriveRefused("; ".join(refused))
    return plan


async def redrive(
    kafka: KafkaConnection, letters: Sequence[DeadLetter], codec: AvroCodec
) -> list[str]:
    """Re-publishes each letter's original bytes and envelope to the topic its DLQ topic is
    the twin of, once every letter passed :func:`redrive_plan` (RedriveRefused, nothing
    sent, otherwise).

    The event keeps its id: consumers that applied it before skip it (their inbox), the one
    that dead-lettered it (which recorded nothing) applies it now.
    """
    plan = redrive_plan(letters, codec)
    producer = reliable_producer(kafka, client_id="choreo-dlq-redrive")
    done: list[str] = []
    try:
        await producer.start()  # inside: a producer that failed to start is stopped too
        for letter, target in plan:
            headers = [(k, v) for k, v in (letter.record.headers or ()) if k not in DLQ_HEADERS]
            md = await producer.send_and_wait(
                target, letter.record.value, key=letter.record.key, headers=headers
            )
            done.append(f"{letter.id} -> {target}[{md.partition}]@{md.offset}")
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
    return done


def parse_id(text: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` of a dead letter; ValueError naming the text otherwise."""
    try:
        topic, partition, offset = text.rsplit(":", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise ValueError(f"{text!r} is not a dead-letter id (topic:partition:offset)") from None


# --- sequenced dead letters: blocked keys and parked events in the services' databases ----


@dataclass(frozen=True)
class ConsumerDatabase:
    """Where a service's consumer keeps its blocked keys: the database `choreo up` gives it."""

    service: str
    consumer: str
    url: str


def consumer_databases(
    services: Sequence[str], *, topic_prefix: str, var_dir: Path, environ: Mapping[str, str]
) -> list[ConsumerDatabase]:
    """The services' consumers and their databases, as `choreo up` places them."""
    urls = database_urls(services, var_dir, environ)
    return [ConsumerDatabase(name, topic_prefix + name, url) for name, url in urls.items()]


async def read_blocks(
    databases: Sequence[ConsumerDatabase],
) -> tuple[list[BlockedKey], list[str]]:
    """Every blocked key with its parked count, and a line per database that could not be
    read (it is down, or predates the tables), naming it with its password masked."""
    out: list[BlockedKey] = []
    problems: list[str] = []
    for target in databases:
        try:
            out.extend(await _blocks(target))
        except DATABASE_ERRORS as exc:
            problems.append(str(database_unreachable(target.service, target.url, exc)))
    return out, problems


async def _blocks(target: ConsumerDatabase) -> list[BlockedKey]:
    db = Database(target.url, single_connection=False)  # raises for a URL SQLAlchemy cannot read
    try:
        async with db.session() as session:
            return await blocks(session, target.consumer)
    finally:
        await db.dispose()


@dataclass(frozen=True)
class Released:
    done: bool  # the consumer acted (else: it has not, within the wait)
    parked: int  # events that were parked behind the key when released
    blocked_again_by: str | None  # a parked event that failed for good and blocks the key now


async def release(target: ConsumerDatabase, key: str, *, wait_s: float) -> Released | None:
    """Asks the consumer to apply the key's parked events without the event that blocks it
    (which is then skipped for good: a later re-drive of its letter is a duplicate), and
    waits up to ``wait_s`` for it to happen. None if the key is not blocked."""
    db = Database(target.url, single_connection=False)
    try:
        async with db.session() as session, session.begin():
            before = {b.key: b for b in await blocks(session, target.consumer)}.get(key)
            if before is None or not await request_release(session, target.consumer, key, utcnow()):
                return None
        deadline = time.monotonic() + wait_s
        while True:
            async with db.session() as session:
                now = {b.key: b for b in await blocks(session, target.consumer)}.get(key)
            if now is None or now.event_id != before.event_id:
                again = None if now is None else now.event_id
                return Released(True, before.parked, again)
            if time.monotonic() >= deadline:
                return Released(False, before.parked, None)
            await asyncio.sleep(0.2)  # poll: the consumer acts on its next sync of blocks
    finally:
        await db.dispose()
