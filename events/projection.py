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

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import MetaData, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec
from events.db import Database
from events.envelope import Event, utcnow
from events.models import EventModel
from events.reading import (
    CollectorFactory,
    Models,
    Positions,
    decode_records,
    reader,
    seek_to,
)
from events.tables import projection_offsets, projections
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


class ProjectionRunner:
    """Feeds the active generation from the topics; follows a replay's switch."""

    def __init__(
        self,
        projection: Projection,
        db: Database,
        codec: AvroCodec,
        bootstrap: str,
        *,
        batch: int = 2000,
        linger_s: float = 0.0,
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
        self.generation = 0
        self.positions: Positions = {}
        self.applied = 0
        self.undecodable = 0
        self.started = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._moved = asyncio.Condition()

    async def start(self) -> None:
        self.generation = await self.store.ensure()
        self._consumer = reader(self.bootstrap, f"projection-{self.projection.name}")
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
        assert self._consumer is not None
        await seek_to(self._consumer, self._tps, self.positions)

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        if self._consumer is None:
            await self.start()
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        next_check = loop.time() + 1.0
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.batch)
                records = [r for recs in batches.values() for r in recs]
                if records:
                    await self._apply(records)
                    if len(records) < self.batch and self.linger_s > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.linger_s)
                elif loop.time() >= next_check:
                    # Idle: notice a replay's switch without waiting for the next event.
                    next_check = loop.time() + 1.0
                    active, _ = await self.store.state()
                    if active != self.generation:
                        await self._follow(active)
        finally:
            await self.close()

    async def _apply(self, records: list[ConsumerRecord]) -> None:
        projection = self.projection
        batch = decode_records(projection.name, projection.models, self.codec, records)
        async with self.store.db.session() as session, session.begin():
            active = await self.store.active_for_update(session)
            if active != self.generation:
                switched = True
            else:
                switched = False
                gen = self.store.generation(active)
                await apply_events(self.projection, session, gen, batch.events)
                await self.store.save_offsets(session, active, batch.positions)
        if switched:
            # A replay switched generations: continue from the new one's own offsets.
            log.info("%s: now serving generation %d", self.projection.name, active)
            await self._follow(active)
            return
        self.positions.update(batch.positions)
        self.applied += len(batch.events)
        self.undecodable += batch.undecodable
        async with self._moved:
            self._moved.notify_all()

    def lag(self) -> dict[TopicPartition, int | None]:
        """Messages between the projection's position and the partition's end."""
        out: dict[TopicPartition, int | None] = {}
        for tp in self._tps:
            high = self._consumer.highwater(tp) if self._consumer is not None else None
            pos = self.positions.get(tp, 0)
            out[tp] = None if high is None else max(high - pos, 0)
        return out

    def reached(self, wanted: Positions) -> bool:
        return all(self.positions.get(tp, 0) > offset for tp, offset in wanted.items())

    async def wait_for(self, wanted: Positions, timeout_s: float) -> bool:
        """Read-your-writes: True once every (partition, offset) in ``wanted`` is applied."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._moved:
                await self._moved.wait_for(lambda: self.reached(wanted))
        return self.reached(wanted)
