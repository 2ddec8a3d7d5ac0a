"""CQRS projections: read models kept from event topics, exactly once, replayable.

A projection owns tables in its own database. Each *generation* of those tables has its own
offsets (``choreo_projection_offsets``), written in the same transaction as its rows, so a
restart neither loses nor re-applies an event; no consumer group is involved. One generation
is active (serves reads, is fed live); a replay builds the next one beside it and switches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec
from events.db import Database
from events.dlq import send_dead_letter
from events.envelope import Event, utcnow
from events.isolation import Isolation, is_infrastructure
from events.kafka import KafkaConnection, reliable_producer, stop_quietly
from events.kafka_auth import refusals, stop_if_refused
from events.metrics import PROJECTION_DEAD_LETTERED, PROJECTION_UNDECODABLE
from events.models import EventModel
from events.projection_store import Generation, ProjectionStore
from events.reading import CollectorFactory, Models, Positions, decode_records, reader, seek_to
from events.routing import RetryPolicy
from events.telemetry import batch_spans
from events.topics import partitions_of

log = logging.getLogger(__name__)

M = TypeVar("M", bound=EventModel)
ApplyFn = Callable[[AsyncSession, "Generation", Event[Any]], Awaitable[None]]
CollectFn = Callable[[list[Event[Any]]], Any]
WriteFn = Callable[[AsyncSession, "Generation", Any], Awaitable[None]]
FlushFn = Callable[[AsyncSession, "Generation"], Awaitable[None]]
DefineTables = Callable[[MetaData, str], None]


@dataclass(frozen=True)
class _Handler:
    fn: ApplyFn | None  # None: the projection's batch function takes it
    model: type[EventModel] | None  # None: the payload stays the decoded dict


@dataclass
class Projection:
    """A read model: its tables (defined per generation suffix) and how events change them.

    Handlers must be deterministic functions of the events (use the events' own times,
    never the clock) so that a rebuild produces the very same rows.
    """

    name: str
    topics: list[str]
    define_tables: DefineTables
    handlers: dict[str, _Handler] = field(default_factory=dict)
    collect: CollectFn | None = None
    write: WriteFn | None = None
    # Writes what the projection keeps in memory for a generation a replay is filling
    # (``Generation.building``); the replay calls it before it compares or switches.
    flush_building: FlushFn | None = None
    # What each replay reader process collects with instead of ``collect`` when every event
    # of a key lies in one reader: the replay then deals partition p of every topic to
    # reader p mod n (events keyed alike on topics with as many partitions land on the
    # same partition number), and a reader may keep what it collected for a key until it
    # has read its share. ``write`` must raise ``NotCoPartitioned`` on a key seen from two
    # readers; the replay then rebuilds with ``collect``.
    reader_collector: CollectorFactory | None = None

    def on(self, model: type[M]) -> Callable[[ApplyFn], ApplyFn]:
        def register(fn: ApplyFn) -> ApplyFn:
            self._add(model.event_type, _Handler(fn, model))
            return fn

        return register

    def on_batch(
        self, models: Iterable[type[EventModel]], collect: CollectFn, write: WriteFn
    ) -> None:
        """Whole batches of these event types, in two steps: ``collect(events)`` folds a
        batch (in the order read) into a value without any I/O, and ``write(session, gen,
        value)`` applies that value in the batch's transaction. The value must pickle: a
        replay may collect in reader processes and write in its own (``events.replay``).

        Payloads stay the dicts the codec decoded: checked against their Avro contracts, but
        not turned into models, which for a projection folding thousands of events per
        batch cost about as much as decoding them.
        """
        if self.collect is not None:
            raise ValueError(f"{self.name} already takes batches")
        for model in models:
            self._add(model.event_type, _Handler(None, None))
        self.collect, self.write = collect, write

    @property
    def models(self) -> Models:
        """The event types handled, each to the model its payload is validated into."""
        return {event_type: h.model for event_type, h in self.handlers.items()}

    def _add(self, event_type: str, handler: _Handler) -> None:
        if event_type in self.handlers:
            raise ValueError(f"two handlers for {event_type} in {self.name}")
        self.handlers[event_type] = handler


async def apply_events(
    projection: Projection, session: AsyncSession, gen: Generation, events: list[Event[Any]]
) -> None:
    """Applies a batch's events in order, in the caller's transaction."""
    if projection.collect is not None and projection.write is not None:
        await projection.write(session, gen, projection.collect(events))
        return
    for event in events:
        fn = projection.handlers[event.event_type].fn
        assert fn is not None  # only a batch function leaves it unset
        await fn(session, gen, event)


# Attempts for an event that fails alone before it is dead-lettered: a projection's failures
# are deterministic (the same rows, the same events) unless the database is at fault, which
# is retried without limit instead.
PROJECTION_RETRY = RetryPolicy(attempts=3, initial_s=0.05, max_s=0.5)
STALL_BACKOFF_MAX_S = 10.0


class ProjectionRunner:
    """Feeds the active generation from the topics; follows a replay's switch.

    An event the projection cannot apply goes to ``<topic>.dlq`` (``Isolation``) and is
    counted; a failure of the database or the broker is waited out (``stalled_since`` and
    ``last_error`` say so) and the batch read again from the saved offsets. The runner
    itself never dies of either.
    """

    def __init__(
        self,
        projection: Projection,
        db: Database,
        codec: AvroCodec,
        kafka: KafkaConnection,
        *,
        batch: int = 2000,
        linger_s: float = 0.0,
        retry: RetryPolicy = PROJECTION_RETRY,
    ) -> None:
        self.projection = projection
        self.store = ProjectionStore(projection, db)
        self.codec = codec
        self.kafka = kafka
        self.batch = batch
        # At low rates a batch holds an event or two and each costs a transaction; after a
        # batch smaller than ``batch`` the runner waits this long before reading again, so
        # the next one gathers what arrived meanwhile. Never when behind (full batches).
        self.linger_s = linger_s
        self.retry = retry
        self.generation = 0
        self.positions: Positions = {}
        self.applied = 0
        # What the followed generation left out: loaded from its database row, so they
        # survive restarts.
        self.dead_lettered = 0
        self.undecodable = 0
        # Why the runner cannot advance, and since when (None while it advances).
        self.last_error: str | None = None
        self.stalled_since: str | None = None
        self.started = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._tps: list[TopicPartition] = []
        self._moved = asyncio.Condition()
        # Read-your-writes readers waiting: no linger while there are any.
        self._readers = 0
        self._hurry = asyncio.Event()
        self._switched_to: int | None = None

    @property
    def consumer_name(self) -> str:
        """The name its dead letters carry (``dlq-consumer``)."""
        return f"projection-{self.projection.name}"

    async def start(self) -> None:
        self.generation = await self.store.ensure()
        self._consumer = reader(self.kafka, self.consumer_name)
        try:
            async with refusals(self.kafka, "read"):
                await self._consumer.start()
                self._tps = await partitions_of(self.kafka, self.projection.topics)
            await self._follow(self.generation)
        except BaseException:
            await self.close()
            raise
        self.started.set()

    async def _follow(self, number: int) -> None:
        self.generation = number
        self.positions = await self.store.offsets(number)
        skipped = await self.store.skipped(number)
        self.dead_lettered, self.undecodable = skipped.dead_lettered, skipped.undecodable
        self._publish_counts()
        assert self._consumer is not None
        await seek_to(self._consumer, self._tps, self.positions)

    def _publish_counts(self) -> None:
        name = self.projection.name
        PROJECTION_DEAD_LETTERED.labels(name).set(self.dead_lettered)
        PROJECTION_UNDECODABLE.labels(name).set(self.undecodable)

    async def close(self) -> None:
        clients, self._consumer, self._dlq = (self._consumer, self._dlq), None, None
        await stop_quietly(*clients)

    async def run(self, stop: asyncio.Event) -> None:
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        next_check = loop.time() + 1.0
        backoff = 0.0
        try:
            while not stop.is_set():
                if backoff:
                    # Stalled: wait, then read again from what the database saved.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    if stop.is_set():
                        break
                    try:
                        await self._follow(self.generation)
                    except Exception as exc:
                        backoff = self._stalled(exc, backoff)
                        continue
                try:
                    batches = await self._consumer.getmany(timeout_ms=200, max_records=self.batch)
                except KafkaError as exc:  # a READ ACL missing shows here
                    await stop_if_refused(self.kafka, exc, "read")
                    raise
                records = [r for recs in batches.values() for r in recs]
                if records:
                    try:
                        await self._apply(records)
                    except Exception as exc:
                        backoff = self._stalled(exc, backoff)
                        continue
                    backoff = 0.0
                    self.last_error = self.stalled_since = None
                    if len(records) < self.batch and self.linger_s > 0:
                        await self._linger(stop)
                elif loop.time() >= next_check:
                    # Idle: notice a replay's switch without waiting for the next event.
                    next_check = loop.time() + 1.0
                    try:
                        active, _ = await self.store.state()
                        if active != self.generation:
                            await self._follow(active)
                    except Exception as exc:
                        backoff = self._stalled(exc, backoff)
        finally:
            await self.close()

    def _stalled(self, exc: BaseException, backoff: float) -> float:
        """Notes why the runner cannot advance; returns the wait before it tries again."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.stalled_since is None:
            self.stalled_since = utcnow().isoformat()
        level = logging.WARNING if is_infrastructure(exc) else logging.ERROR
        log.log(level, "%s: cannot advance (%s); retrying", self.projection.name, self.last_error)
        return min(max(backoff * 2, 0.2), STALL_BACKOFF_MAX_S)

    async def _apply(self, records: list[ConsumerRecord]) -> None:
        projection = self.projection
        batch = decode_records(projection.name, projection.models, self.codec, records)
        try:
            applied = await self._commit(batch.events, batch.positions, 0, batch.undecodable)
        except Exception as exc:
            if is_infrastructure(exc) or not batch.events:
                raise
            log.warning(
                "%s: batch of %d events failed (%r); looking for the event at fault",
                projection.name,
                len(batch.events),
                exc,
            )
            by_offset = {(r.topic, r.partition, r.offset): r for r in records}

            async def dead_letter(event: Event[Any], error: BaseException, attempts: int) -> None:
                record = by_offset[event.topic, event.partition, event.offset]
                await self._dead_letter(record, event, error, attempts)

            isolation = Isolation(
                batch.events,
                batch.positions,
                batch.undecodable,
                self._commit,
                dead_letter,
                self.retry,
            )
            applied = await isolation.split(exc)
        if not applied:
            # A replay switched generations: continue from the new one's own offsets.
            active, self._switched_to = self._switched_to, None
            assert active is not None
            log.info("%s: now serving generation %d", projection.name, active)
            await self._follow(active)

    async def _commit(
        self, events: list[Event[Any]], positions: Positions, dead: int, undecodable: int
    ) -> bool:
        async with self.store.db.session() as session, session.begin():
            active = await self.store.active_for_update(session)
            if active != self.generation:
                self._switched_to = active
                return False
            gen = self.store.generation(active)
            if events:
                with batch_spans(self.consumer_name, events):  # one span per event, as a consumer
                    await apply_events(self.projection, session, gen, events)
            await self.store.save_offsets(session, active, positions)
            await self.store.add_skipped(session, active, dead, undecodable)
        self.positions.update(positions)
        self.applied += len(events)
        if dead or undecodable:
            self.dead_lettered += dead
            self.undecodable += undecodable
            self._publish_counts()
        async with self._moved:
            self._moved.notify_all()
        return True

    async def _dead_letter(
        self, record: ConsumerRecord, event: Event[Any], error: BaseException, attempts: int
    ) -> None:
        log.error(
            "%s: dead-lettering %s %s at %s[%d]@%d after %d attempts: %r",
            self.projection.name,
            event.event_type,
            event.event_id,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )
        if self._dlq is None:  # started on first use: most runners never need one
            producer = reliable_producer(self.kafka, client_id=f"{self.consumer_name}-dlq")
            await producer.start()
            self._dlq = producer
        await send_dead_letter(
            self._dlq, record, consumer=self.consumer_name, error=error, attempts=attempts
        )

    def lag(self) -> dict[TopicPartition, int | None]:
        """Messages between the projection's position and the partition's end."""
        out: dict[TopicPartition, int | None] = {}
        for tp in self._tps:
            high = self._consumer.highwater(tp) if self._consumer is not None else None
            pos = self.positions.get(tp, 0)
            out[tp] = None if high is None else max(high - pos, 0)
        return out

    async def _linger(self, stop: asyncio.Event) -> None:
        """Waits linger_s for more events (fewer, larger transactions at low rates), less
        when the service stops or a reader waits for its own writes."""
        if self._readers:
            return
        self._hurry.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._hurry.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.linger_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def reached(self, wanted: Positions) -> bool:
        return all(self.positions.get(tp, 0) > offset for tp, offset in wanted.items())

    async def wait_for(self, wanted: Positions, timeout_s: float) -> bool:
        """Read-your-writes: True once every (partition, offset) in ``wanted`` is applied."""
        self._readers += 1
        self._hurry.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s), self._moved:
                    await self._moved.wait_for(lambda: self.reached(wanted))
        finally:
            self._readers -= 1
        return self.reached(wanted)
