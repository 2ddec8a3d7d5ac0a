"""Reading a projection's topics: the consumer, decoding records into events, and the
collector settings. No database code: a replay's reader processes import this and little
else, so they start in a fraction of the time the whole platform takes to import."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from events.codec import AvroCodec, CodecError
from events.envelope import CE_TYPE, H_EVENT_TYPE, Envelope, EnvelopeError, Event
from events.kafka import KafkaConnection, plain_consumer

if TYPE_CHECKING:
    from events.models import EventModel

log = logging.getLogger(__name__)

Positions = dict[TopicPartition, int]
Models = Mapping[str, "type[EventModel] | None"]
"""The event types a projection handles; each to the model its payload is validated into,
or None to keep the decoded dict."""


class Collector(Protocol):
    """A replay reader's collect, one per reader process: called with each batch's events
    in the order read, it returns the value to write for the batch, and may keep part of
    it (what later batches would change again) to return from ``rest()`` once the reader
    has read its share."""

    def __call__(self, events: list[Event[Any]]) -> Any: ...

    def rest(self) -> Any | None:
        """What it kept, to write after its last batch (None: nothing)."""
        ...


CollectorFactory = Callable[[int, "str | None"], Collector]
"""Makes the collector of the reader with that number (it must pickle: a module-level
class or function). The second argument is a scratch directory (or None) where a reader may
leave SQLite files for the writer: given when the replay writes into a SQLite file on a
connection of its own, which can attach them (``events.sqlite_wal.writes_aside``)."""


class EachBatch:
    """A projection's ``collect`` as a Collector that keeps nothing."""

    def __init__(
        self,
        collect: Callable[[list[Event[Any]]], Any],
        reader: int = 0,
        scratch: str | None = None,
    ) -> None:
        self.collect = collect  # ``reader``, ``scratch``: a factory's arguments, of no use here

    def __call__(self, events: list[Event[Any]]) -> Any:
        return self.collect(events)

    def rest(self) -> Any | None:
        return None


class NotCoPartitioned(RuntimeError):
    """Raised by a projection's write when readers that should each hold every event of
    their keys did not (a key's events on partitions of different numbers: another key
    or partitioner, or topics with different partition counts). The replay then rebuilds
    with readers that keep nothing across batches."""


@dataclass
class DecodedBatch:
    """A batch of records as a projection applies them."""

    events: list[Event[Any]]  # those the projection handles, decoded, in the order read
    positions: Positions  # the next offset per partition the records cover
    undecodable: int


def decode_records(
    name: str, models: Models, codec: AvroCodec, records: Iterable[ConsumerRecord]
) -> DecodedBatch:
    """Decodes what the projection ``name`` handles, skipping (and counting) what it cannot
    decode.

    The services' consumers dead-letter malformed events on these topics; a projection
    only skips them so the read side never stalls on one. A valid event is never skipped
    for a schema registry that cannot be asked (an id not seen yet): ``RegistryUnavailable``
    is raised, and the projection's runner waits and reads again from its saved offsets.
    """
    wanted: set[str | None] = {*models, None}  # None: no header, the body says
    events: list[Event[Any]] = []
    ends: dict[tuple[str, int], int] = {}
    bad = 0
    for record in records:
        ends[record.topic, record.partition] = record.offset + 1
        if _event_type(record) not in wanted:
            continue  # from the header, before decoding: another projection's business
        try:
            decoded = codec.decode(record.value or b"")
            if decoded.event_type not in models:
                continue
            envelope = Envelope.from_headers(
                record.headers or (), record.key, decoded.writer_version
            )
            payload: Any = decoded.payload
            model = models[decoded.event_type]
            if model is not None:
                payload = model.model_validate(payload)
        except (CodecError, EnvelopeError, ValueError) as exc:  # pydantic's ValidationError too
            log.warning(
                "%s: skipping undecodable %s[%d]@%d: %s",
                name,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            bad += 1
            continue
        events.append(Event(envelope, payload, record.topic, record.partition, record.offset))
    positions = {TopicPartition(t, p): offset for (t, p), offset in ends.items()}
    return DecodedBatch(events, positions, bad)


def _event_type(record: ConsumerRecord) -> str | None:
    """choreo's event-type header, else CloudEvents' ce_type (a record with only those)."""
    return _header(record, H_EVENT_TYPE) or _header(record, CE_TYPE)


def _header(record: ConsumerRecord, wanted: str) -> str | None:
    for name, value in record.headers or ():
        if name == wanted:
            try:
                return None if value is None else bytes(value).decode()
            except UnicodeDecodeError:
                return None  # decoded, and skipped as undecodable if the envelope is bad
    return None


def reader(kafka: KafkaConnection, client_id: str) -> AIOKafkaConsumer:
    # A group id without subscribe(): offsets live in the projection's database, not in
    # Kafka; the id only avoids aiokafka's group-less coordinator shutdown quirk.
    return plain_consumer(
        kafka,
        group_id=f"{client_id}-reader",
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )


async def seek_to(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], at: Positions) -> None:
    consumer.assign(list(tps))
    fresh = [tp for tp in tps if tp not in at]
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    for tp in tps:
        if tp in at:
            consumer.seek(tp, at[tp])


def tune_gc() -> None:
    """Fewer garbage collections for a process that applies events in batches.

    A batch makes tens of thousands of short-lived containers (decoded payloads, models,
    envelopes) that all die when it is written. With the default thresholds the collector
    runs every 700 allocations and walks the batch's live objects each time, which costs
    about as much CPU as decoding the events. Objects alive at start-up (modules, schemas)
    are frozen out of the collector's walks for good.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
