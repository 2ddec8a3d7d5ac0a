"""Inspecting and re-driving dead letters (`choreo dlq ...`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from events.codec import AvroCodec, CodecError
from events.dlq import (
    DLQ_CONSUMER,
    DLQ_ERROR,
    DLQ_HEADERS,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
)
from events.envelope import H_EVENT_ID, H_EVENT_TYPE, headers_dict
from events.kafka import reliable_producer
from events.topics import partitions_of


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
            "event_type": h.get(H_EVENT_TYPE, "?"),
            "event_id": h.get(H_EVENT_ID, "?"),
        }

    def describe_payload(self, codec: AvroCodec) -> str:
        try:
            decoded = codec.decode(self.record.value or b"")
        except CodecError as exc:
            return f"undecodable ({exc}): {(self.record.value or b'').hex()[:400]}"
        return f"{decoded.event_type} v{decoded.writer_version}: {decoded.payload}"


async def read_dead_letters(bootstrap: str, dlq_topics: Sequence[str]) -> list[DeadLetter]:
    """Every record currently in the dead-letter topics, oldest first per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="choreo-dlq-reader", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await partitions_of(bootstrap, dlq_topics)
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


async def count_dead_letters(bootstrap: str, dlq_topics: Sequence[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="choreo-dlq-counter", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await partitions_of(bootstrap, dlq_topics)
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
    counts: dict[str, int] = {t: 0 for t in dlq_topics}
    for tp in tps:
        counts[tp.topic] += end[tp] - begin[tp]
    return counts


async def redrive(bootstrap: str, letters: Sequence[DeadLetter]) -> list[str]:
    """Re-publishes each letter's original bytes and envelope to its original topic.

    The event keeps its id: consumers that applied it before skip it (their inbox), the one
    that dead-lettered it (which recorded nothing) applies it now.
    """
    producer = reliable_producer(bootstrap, client_id="choreo-dlq-redrive")
    await producer.start()
    done: list[str] = []
    try:
        for letter in letters:
            h = letter.headers
            origin = h.get(DLQ_TOPIC)
            if not origin:
                raise ValueError(f"{letter.id} has no {DLQ_TOPIC} header")
            headers = [(k, v) for k, v in (letter.record.headers or ()) if k not in DLQ_HEADERS]
            md = await producer.send_and_wait(
                origin, letter.record.value, key=letter.record.key, headers=headers
            )
            done.append(f"{letter.id} -> {origin}[{md.partition}]@{md.offset}")
    finally:
        await producer.stop()
    return done


def parse_id(text: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` of a dead letter; ValueError naming the text otherwise."""
    try:
        topic, partition, offset = text.rsplit(":", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise ValueError(f"{text!r} is not a dead-letter id (topic:partition:offset)") from None
