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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec
from events.db import Database, is_transient
from events.dlq import send_dead_letter
from events.envelope import Event, utcnow
from events.kafka import reliable_producer
from events.metrics import PROJECTION_DEAD_LETTERED, PROJECTION_UNDECODABLE
from events.models import EventModel
from events.reading import (
    CollectorFactory,
    Models,
    Positions,
    decode_records,
    reader,
    seek_to,
)
from events.routing import RetryPolicy
from events.tables import projection_offsets, projections
from events.telemetry import batch_spans
from events.topics import partitions_of

log = logging.getLogger(__name__)

M = TypeVar("M", bound=EventModel)
ApplyFn = Callable[[AsyncSession, "Generation", Event[Any]], Awaitable[None]]
CollectFn = Callable[[list[Event[Any]]], Any]
WriteFn = Callable[[AsyncSession, "Generation", Any], Awaitable[None]]
FlushFn = Callable[[AsyncSession, "Generation"], Awaitable[None]]
DefineTables = Callable[[MetaData, str], None]

# Events a generation left out, counted in the transaction that moves its offsets past them,
# so the counts survive restarts and belong to the rows that miss them (a replay's
# generation counts its own). A table of its own, created by ``ProjectionStore.ensure``:
# databases made before it need no ALTER.
_counts_metadata = MetaData()
projection_skipped = Table(
    "choreo_projection_skipped",
    _counts_metadata,
    Column("projection", String(255), primary_key=True),
    Column("generation", Integer, primary_key=True),
    # Applying them failed for good: the live runner dead-lettered them, a replay skipped them.
    Column("dead_lettered", BigInteger, nullable=False),
    Column("undecodable", BigInteger, nullable=False),  # bytes no contract reads
)


@dataclass
class Skipped:
    dead_lettered: int = 0
    undecodable: int = 0


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


class Generation:
    """One generation's tables; ``gen["orders"]`` is the Table for base name ``orders``."""

    def __init__(self, projection: Projection, number: int) -> None:
        self.number = number
        # True while a replay fills this generation: nothing reads it yet, and a replay
        # killed midway drops it, so a projection may keep rows in memory across its
        # transactions until ``Projection.flush_building``.
        self.building = False
        self.metadata = MetaData()
        projection.define_tables(self.metadata, f"_g{number}")
        suffix = f"_g{number}"
        self.tables = {t.name.removesuffix(suffix): t for t in self.metadata.sorted_tables}

    def __getitem__(self, base_name: str) -> Table:
        return self.tables[base_name]


class ProjectionStore:
    """A projection's generations, offsets and active pointer in its database."""

    def __init__(self, projection: Projection, db: Database) -> None:
        self.projection = projection
        self.db = db
        self._generations: dict[int, Generation] = {}

    def generation(self, number: int) -> Generation:
        if number not in self._generations:
            self._generations[number] = Generation(self.projection, number)
        return self._generations[number]

    async def ensure(self) -> int:
        """Creates the state row and the first generation's tables if absent."""
        async with self.db.engine.begin() as conn:
            await conn.run_sync(_counts_metadata.create_all)
        async with self.db.session() as s, s.begin():
            row = await s.execute(
                select(projections.c.active_generation).where(
                    projections.c.projection == self.projection.name
                )
            )
            active = row.scalar_one_or_none()
            if active is None:
                active = 1
                await s.execute(
                    projections.insert().values(
                        projection=self.projection.name, active_generation=1, updated_at=utcnow()
                    )
                )
        await self.create_tables(active)
        return int(active)

    async def state(self) -> tuple[int, int | None]:
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(
                        projections.c.active_generation, projections.c.building_generation
                    ).where(projections.c.projection == self.projection.name)
                )
            ).one()
        return int(row[0]), (int(row[1]) if row[1] is not None else None)

    async def create_tables(self, number: int) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.generation(number).metadata.create_all)

    async def drop_generation(self, number: int) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(self.generation(number).metadata.drop_all)
            await conn.execute(
                delete(projection_offsets).where(
                    projection_offsets.c.projection == self.projection.name,
                    projection_offsets.c.generation == number,
                )
            )
            await conn.execute(
                delete(projection_skipped).where(
                    projection_skipped.c.projection == self.projection.name,
                    projection_skipped.c.generation == number,
                )
            )

    async def offsets(self, number: int, session: AsyncSession | None = None) -> Positions:
        query = select(
            projection_offsets.c.topic,
            projection_offsets.c.partition,
            projection_offsets.c.next_offset,
        ).where(
            projection_offsets.c.projection == self.projection.name,
            projection_offsets.c.generation == number,
        )
        if session is not None:
            rows = (await session.execute(query)).all()
        else:
            async with self.db.session() as s:
                rows = (await s.execute(query)).all()
        return {TopicPartition(t, p): int(o) for t, p, o in rows}

    async def active_for_update(self, session: AsyncSession) -> int:
        """The active generation, locking the state row until the transaction ends."""
        row = await session.execute(
            select(projections.c.active_generation)
            .where(projections.c.projection == self.projection.name)
            .with_for_update()
        )
        return int(row.scalar_one())

    async def skipped(self, number: int) -> Skipped:
        """What the generation left out so far (``projection_skipped``)."""
        t = projection_skipped
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(t.c.dead_lettered, t.c.undecodable).where(
                        t.c.projection == self.projection.name, t.c.generation == number
                    )
                )
            ).one_or_none()
        return Skipped() if row is None else Skipped(int(row[0]), int(row[1]))

    async def add_skipped(
        self, session: AsyncSession, number: int, dead_lettered: int, undecodable: int
    ) -> None:
        """Counts events the generation leaves out, in the transaction that passes them."""
        if not dead_lettered and not undecodable:
            return
        t = projection_skipped
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = upsert(t).values(
            projection=self.projection.name,
            generation=number,
            dead_lettered=dead_lettered,
            undecodable=undecodable,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["projection", "generation"],
            set_={
                "dead_lettered": t.c.dead_lettered + stmt.excluded.dead_lettered,
                "undecodable": t.c.undecodable + stmt.excluded.undecodable,
            },
        )
        await session.execute(stmt)

    async def save_offsets(self, session: AsyncSession, number: int, positions: Positions) -> None:
        rows = [
            {
                "projection": self.projection.name,
                "generation": number,
                "topic": tp.topic,
                "partition": tp.partition,
                "next_offset": offset,
            }
            for tp, offset in positions.items()
        ]
        if not rows:
            return
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        upsert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = upsert(projection_offsets).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["projection", "generation", "topic", "partition"],
            set_={"next_offset": stmt.excluded.next_offset},
        )
        await session.execute(stmt)


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


Commit = Callable[[list[Event[Any]], Positions, int, int], Awaitable[bool]]
"""One transaction: applies the events, saves the positions, counts that many dead-lettered
and undecodable events; False when it did not apply them (a replay switched generations)."""
OnPoison = Callable[[Event[Any], BaseException, int], Awaitable[None]]
"""Called with an event that failed every attempt, its last error and the attempts made."""


def is_infrastructure(exc: BaseException) -> bool:
    """The database, the network or the broker failed, not the event: never a poison. So
    did the schema on a ProgrammingError (a missing table or column): statements are the
    projection's own, with the events' values bound, so no event can cause one, and taking
    it for a poison would dead-letter every event until the schema is fixed."""
    return isinstance(exc, OSError | KafkaError | ProgrammingError) or is_transient(exc)


class Isolation:
    """Finds the events of a failed batch that cannot be applied, by bisection, and applies
    the rest in order.

    A batch that failed as a whole is split in halves, each applied in a transaction of its
    own (with the positions it reaches), the failing ones split again: one poison event
    among 2,000 costs about 22 transactions, not 2,000. An event that fails alone is tried
    ``retry.attempts`` times in all, then handed to ``on_poison`` and passed: the positions
    past it are saved with its count in one transaction. An infrastructure error stops the
    search (raised): what was committed stays, the caller reads on from its saved offsets.
    """

    def __init__(
        self,
        events: Sequence[Event[Any]],
        end: Positions,
        undecodable: int,
        commit: Commit,
        on_poison: OnPoison,
        retry: RetryPolicy,
    ) -> None:
        self.events, self.end, self.undecodable = events, end, undecodable
        self.commit, self.on_poison, self.retry = commit, on_poison, retry
        self.poisoned = 0

    async def split(self, error: BaseException) -> bool:
        """Applies the batch that failed with ``error``; False if a commit did not apply."""
        return await self._split(0, len(self.events), error)

    async def _split(self, lo: int, hi: int, error: BaseException) -> bool:
        if hi - lo == 1:
            return await self._alone(lo, error)
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            try:
                if not await self._commit(a, b):
                    return False
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if not await self._split(a, b, exc):
                    return False
        return True

    async def _alone(self, i: int, error: BaseException) -> bool:
        attempt = 1  # it failed once already, alone or in its segment
        while attempt < self.retry.attempts:
            await asyncio.sleep(self.retry.delay(attempt))  # backoff between attempts
            attempt += 1
            try:
                return await self._commit(i, i + 1)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                error = exc
        await self.on_poison(self.events[i], error, attempt)
        self.poisoned += 1
        return await self._commit(i, i + 1, poison=True)

    async def _commit(self, lo: int, hi: int, *, poison: bool = False) -> bool:
        last = hi == len(self.events)
        events = [] if poison else list(self.events[lo:hi])
        undecodable = self.undecodable if last else 0  # counted once, with the batch's end
        return await self.commit(events, self._through(hi), int(poison), undecodable)

    def _through(self, hi: int) -> Positions:
        """The positions just past ``events[:hi]`` (the batch's end for the last one, which
        also passes the records the projection does not handle)."""
        if hi == len(self.events):
            return dict(self.end)
        out: Positions = {}
        for event in self.events[:hi]:
            out[TopicPartition(event.topic, event.partition)] = event.offset + 1
        return out


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
        bootstrap: str,
        *,
        batch: int = 2000,
        linger_s: float = 0.0,
        retry: RetryPolicy = PROJECTION_RETRY,
    ) -> None:
        self.projection = projection
        self.store = ProjectionStore(projection, db)
        self.codec = codec
        self.bootstrap = bootstrap
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
        self._consumer = reader(self.bootstrap, self.consumer_name)
        await self._consumer.start()
        try:
            self._tps = await partitions_of(self.bootstrap, self.projection.topics)
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
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        if self._dlq is not None:
            producer, self._dlq = self._dlq, None
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

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
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.batch)
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
            producer = reliable_producer(self.bootstrap, client_id=f"{self.consumer_name}-dlq")
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
