"""Publishing events from outside a service: the CLI, the demo, tools, tests and benchmarks.

Two steps, so that nothing is sent unless every record is valid (a bad file publishes
nothing): :func:`prepare` validates and encodes drafts into :class:`Outgoing` records (topic,
Avro value, envelope), and :func:`send_all` sends records and reports where each landed.
:func:`publish` does both. ``choreo publish`` prepares its records its own way (from text,
see ``events.cli.preparer``) and sends them with :func:`send_all`.

Sending is in batches: events are packed into one batch per partition with aiokafka's public
batch API (``create_batch``/``send_batch``) and each batch is submitted as it fills, while
the next fills, instead of one ``send()`` per event, whose per-call work costs about as much
CPU as validating the event (``python -m bench.publish`` measures the CLI against raw
``send_batch``). Delivery is as ``send()``'s: the same idempotent producer (acks=all; the
producer numbers each batch as it sends it), the partition chosen by aiokafka's default
partitioner from the key and the sorted partition list, as ``send()`` chooses it, and a
partition's batches sent in order, so a key's events keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from events.codec import AvroCodec
from events.envelope import Envelope, new_event_id, utcnow
from events.kafka import KafkaConnection, reliable_producer
from events.telemetry import created_traceparent

__all__ = [
    "Draft",
    "Landed",
    "OnLanded",
    "Outgoing",
    "PublishError",
    "Published",
    "prepare",
    "publish",
    "send_all",
]


class PublishError(Exception):
    """A record that cannot be published, or a send that failed; the message says which."""


@dataclass(frozen=True)
class Draft:
    event_type: str
    payload: Mapping[str, Any]
    key: str
    event_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: datetime | None = None


class Outgoing(NamedTuple):
    """A validated, encoded event ready to send: the payload only as Avro bytes, the
    envelope (which gives the key and the headers). A tuple: bulk publishing makes one per
    event."""

    topic: str
    value: bytes
    envelope: Envelope


class Landed(NamedTuple):
    """Where one event was written."""

    record: Outgoing
    topic: str
    partition: int
    offset: int


OnLanded = Callable[[Landed], None]


@dataclass(frozen=True)
class Published:
    event_id: str
    event_type: str
    topic: str
    partition: int
    offset: int
    key: str


def prepare(codec: AvroCodec, drafts: Sequence[Draft], producer: str) -> list[Outgoing]:
    """Validates and encodes every draft; raises PublishError at the first bad one."""
    ready = []
    for index, draft in enumerate(drafts, start=1):
        where = f"record {index} ({draft.event_type})"
        try:
            codec.validate(draft.event_type, draft.payload)
            value = codec.encode(draft.event_type, draft.payload)
            topic = codec.catalogue.topic_for(draft.event_type)
        except Exception as exc:
            raise PublishError(f"{where}: {exc}") from None
        if not draft.key:
            raise PublishError(f"{where}: empty key")
        event_id = draft.event_id or new_event_id()
        # The trace a published event starts (its consumers' spans are children of this).
        traceparent = created_traceparent(topic, draft.key, event_id)
        env = Envelope(
            event_id=event_id,
            event_type=draft.event_type,
            schema_version=codec.catalogue.latest(draft.event_type).version,
            occurred_at=draft.occurred_at or utcnow(),
            producer=producer,
            correlation_id=draft.correlation_id or event_id,
            key=draft.key,
            causation_id=draft.causation_id,
            traceparent=traceparent,
        )
        ready.append(Outgoing(topic, value, env))
    return ready


async def publish(
    codec: AvroCodec,
    kafka: KafkaConnection,
    drafts: Sequence[Draft],
    *,
    producer: str = "choreo-cli",
) -> list[Published]:
    """Validate all, then send all and wait for every ack; where each landed, in draft order."""
    ready = prepare(codec, drafts, producer)
    landed: dict[int, Landed] = {}

    def note(where: Landed) -> None:
        landed[id(where.record)] = where

    await send_all(kafka, ready, note, client_id=producer)
    out = []
    for record in ready:
        where = landed[id(record)]
        env = record.envelope
        out.append(
            Published(
                env.event_id, env.event_type, where.topic, where.partition, where.offset, env.key
            )
        )
    return out


async def send_all(
    kafka: KafkaConnection,
    records: Iterable[Outgoing],
    on_landed: OnLanded | None = None,
    *,
    client_id: str,
) -> int:
    """Sends every record with the idempotent producer (acks=all) and waits for every
    acknowledgement; ``on_landed`` hears of each event, in order within a partition, as its
    batch is acknowledged. Returns how many were sent; PublishError says how many were
    acknowledged before a failure."""
    records = records if isinstance(records, Sequence) else list(records)
    if not records:
        return 0
    producer = reliable_producer(kafka, client_id=client_id)
    batches = _Batches(producer, on_landed or _ignore)
    try:
        await producer.start()
        for record in records:
            await batches.add(record)
        await batches.finish()
    except KafkaError as exc:
        raise PublishError(
            f"cannot publish to {kafka}: {exc or type(exc).__name__} "
            f"({batches.acked} of {len(records)} events acknowledged before the failure)"
        ) from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
    return batches.acked


def _ignore(_: Landed) -> None:
    pass


@dataclass(slots=True)
class _Batch:
    """One partition's batch being filled, and its events in offset order."""

    builder: Any  # aiokafka's BatchBuilder (not exported by aiokafka)
    records: list[Outgoing]


class _Batches:
    """Open batches by partition, and the submitted ones waiting for their acks in order."""

    def __init__(self, kafka: AIOKafkaProducer, on_landed: OnLanded) -> None:
        self.kafka = kafka
        self.on_landed = on_landed
        self.acked = 0
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._submitted: deque[tuple[asyncio.Future[Any], list[Outgoing]]] = deque()

    async def add(self, record: Outgoing) -> None:
        topic = record.topic
        key = record.envelope.key.encode()
        ids = self._partitions.get(topic) or await self._ids(topic)
        partition = self._partitioner(key, ids, None)
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._new_batch()
        if not self._append(batch, record, key):
            await self._submit(topic, partition, batch)
            batch = self._open[(topic, partition)] = self._new_batch()
            if not self._append(batch, record, key):
                raise PublishError(f"event {record.envelope.event_id} is larger than a whole batch")
        self._report_done()

    async def finish(self) -> None:
        """Submits the partly filled batches and waits for every acknowledgement."""
        for (topic, partition), batch in self._open.items():
            if batch.records:
                await self._submit(topic, partition, batch)
        self._open.clear()
        while self._submitted:
            future, records = self._submitted.popleft()
            self._landed(await future, records)

    async def _ids(self, topic: str) -> list[int]:
        # Sorted, as aiokafka's send() lists them for the partitioner.
        ids = self._partitions[topic] = sorted(await self.kafka.partitions_for(topic))
        return ids

    def _new_batch(self) -> _Batch:
        return _Batch(self.kafka.create_batch(), [])

    @staticmethod
    def _append(batch: _Batch, record: Outgoing, key: bytes) -> bool:
        appended = batch.builder.append(
            timestamp=None, key=key, value=record.value, headers=record.envelope.to_headers()
        )
        if appended is None:
            return False
        batch.records.append(record)
        return True

    async def _submit(self, topic: str, partition: int, batch: _Batch) -> None:
        # Waits while the partition's previous batch is still queued: back-pressure.
        future = await self.kafka.send_batch(batch.builder, topic, partition=partition)
        self._submitted.append((future, batch.records))

    def _report_done(self) -> None:
        while self._submitted and self._submitted[0][0].done():
            future, records = self._submitted.popleft()
            self._landed(future.result(), records)

    def _landed(self, metadata: Any, records: list[Outgoing]) -> None:
        for i, record in enumerate(records):
            self.on_landed(Landed(record, metadata.topic, metadata.partition, metadata.offset + i))
        self.acked += len(records)
