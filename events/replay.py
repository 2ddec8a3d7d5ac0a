"""Rebuilding a projection from offset 0 beside the live one, then switching atomically.

The live generation keeps serving and being fed while the next generation is filled from
the beginning of the topics up to the end offsets taken at start, then caught up; the
switch is one update of the active pointer, after which the live runner follows the new
generation from its own offsets. A replay killed midway leaves only an unused building
generation behind, which the next replay drops before starting again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec
from events.db import Database, sqlite_file
from events.envelope import Event, utcnow
from events.isolation import Isolation, is_infrastructure
from events.projection import PROJECTION_RETRY, Projection, apply_events
from events.projection_store import Generation, ProjectionStore
from events.reading import (
    CollectorFactory,
    EachBatch,
    NotCoPartitioned,
    Positions,
    decode_records,
    reader,
    seek_to,
)
from events.replay_readers import (
    ReaderError,
    Readers,
    ReaderSpec,
    below,
    co_partitioned,
    reader_processes,
    readers_by_number,
    split,
    split_by_number,
)
from events.sqlite_wal import Sessions, checkpoints_aside, writes_aside
from events.tables import projections
from events.topics import partitions_of

log = logging.getLogger(__name__)

MAX_DIFFERENCES = 50


@dataclass
class Progress:
    phase: str
    events: int
    total: int
    rate: float
    eta_s: float | None


@dataclass
class ReplayReport:
    projection: str
    generation: int
    events: int
    seconds: float
    switched: bool
    differences: list[str] | None = None
    undecodable: int = 0
    # Events that failed to apply for good (the live runner dead-lettered them): left out.
    skipped: int = 0
    readers: int = 0  # reader processes that read the rebuild (0: this process did)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


OnProgress = Callable[[Progress], None]


class PoisonInReaders(RuntimeError):
    """A batch collected by reader processes failed to apply: the replay reads again in
    this process, which finds and skips the events at fault (``Isolation``)."""


class _Builder:
    """Fills one generation from the topics, never past a given position per partition."""

    def __init__(
        self,
        store: ProjectionStore,
        codec: AvroCodec,
        gen: Generation,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        start: Positions,
        batch: int,
        on_progress: OnProgress | None,
        sessions: Sessions,
    ) -> None:
        self.store, self.codec, self.gen = store, codec, gen
        self.sessions = sessions  # for the generation's writes
        self.consumer, self.tps, self.batch = consumer, tps, batch
        self.positions: Positions = dict(start)
        self.events = 0
        self.undecodable = 0
        self.skipped = 0
        self.readers = 0
        self.on_progress = on_progress
        self.started = time.monotonic()

    def reached(self, target: Positions) -> bool:
        return all(self.positions[tp] >= target.get(tp, 0) for tp in self.tps)

    async def fill_to(self, target: Positions, phase: str, total: int) -> None:
        projection = self.store.projection
        while not self.reached(target):
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.batch)
            records, _ = below(self.consumer, batches, target)
            if not records:
                continue
            decoded = decode_records(projection.name, projection.models, self.codec, records)
            try:
                await self._commit(decoded.events, decoded.positions, 0, decoded.undecodable)
            except Exception as exc:
                if is_infrastructure(exc) or not decoded.events:
                    raise
                isolation = Isolation(
                    decoded.events,
                    decoded.positions,
                    decoded.undecodable,
                    self._commit,
                    self._skip,
                    PROJECTION_RETRY,
                )
                await isolation.split(exc)
                self.skipped += isolation.poisoned
            self._done(decoded.positions, len(records), decoded.undecodable, phase, total)
        await self._end_phase()

    async def _commit(
        self, events: list[Event[Any]], positions: Positions, dead: int, undecodable: int
    ) -> bool:
        async with self.sessions() as session, session.begin():
            if events:
                await apply_events(self.store.projection, session, self.gen, events)
            await self.store.save_offsets(session, self.gen.number, positions)
            await self.store.add_skipped(session, self.gen.number, dead, undecodable)
        return True

    async def _skip(self, event: Event[Any], error: BaseException, attempts: int) -> None:
        # The live runner dead-lettered it already (or will): a replay only leaves it out.
        log.warning(
            "%s: replay skips %s %s at %s[%d]@%d: %r",
            self.store.projection.name,
            event.event_type,
            event.event_id,
            event.topic,
            event.partition,
            event.offset,
            error,
        )

    async def fill_with_readers(
        self,
        target: Positions,
        phase: str,
        total: int,
        pool: Readers,
        bootstrap: str,
        name: str,
        keep_keys: bool,
        scratch: str | None,
    ) -> None:
        """``fill_to`` with reading, decoding and collecting done by reader processes (the
        replay's own consumer stays paused meanwhile; it reads the catch-up). ``keep_keys``:
        with the projection's reader collector, on co-partitioned topics. ``scratch``: a
        directory for files the readers hand to the writer (``CollectorFactory``)."""
        projection = self.store.projection
        assert projection.collect is not None and projection.write is not None
        readers = len(pool.procs)
        collector: CollectorFactory = partial(EachBatch, projection.collect)
        shares = [
            (tps, frozenset[TopicPartition]())
            for tps in split(self.tps, readers, self._left(target))
        ]
        if _keeps_keys(projection, self.tps, keep_keys):
            assert projection.reader_collector is not None
            collector = projection.reader_collector
            readers = await _by_number(pool, self.tps)
            shares = split_by_number(self.tps, readers)
        self.readers = len(shares)
        specs = [
            ReaderSpec(
                bootstrap,
                f"{name}-r{i}",
                projection.name,
                projection.models,
                collector,
                i,
                self.codec,
                tps,
                {tp: self.positions[tp] for tp in tps},
                target,
                self.batch,
                shared,
                readers,
                scratch,
            )
            for i, (tps, shared) in enumerate(shares)
        ]
        received = await pool.start(specs)
        while (chunk := await received.get()) is not None:
            if isinstance(chunk, ReaderError):
                raise chunk
            # Readers sharing a partition report it each: the furthest counts.
            positions = {tp: max(n, self.positions[tp]) for tp, n in chunk.positions.items()}
            try:
                async with self.sessions() as session, session.begin():
                    await projection.write(session, self.gen, chunk.value)
                    await self.store.save_offsets(session, self.gen.number, positions)
                    await self.store.add_skipped(session, self.gen.number, 0, chunk.undecodable)
            except NotCoPartitioned:
                raise
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                raise PoisonInReaders(f"a batch from the readers failed: {exc!r}") from exc
            self._done(positions, chunk.records, chunk.undecodable, phase, total)
        await self._end_phase()

    def _left(self, target: Positions) -> dict[TopicPartition, int]:
        return {tp: max(target.get(tp, 0) - self.positions[tp], 0) for tp in self.tps}

    async def _end_phase(self) -> None:
        await self.flush()
        # Records fetched past the target were dropped: the next phase reads them again.
        for tp in self.tps:
            self.consumer.seek(tp, self.positions[tp])
        self.consumer.resume(*self.tps)

    def _done(self, positions: Positions, records: int, bad: int, phase: str, total: int) -> None:
        self.positions.update(positions)
        self.events += records
        self.undecodable += bad
        self._report(phase, total)

    async def flush(self) -> None:
        """Writes what the projection kept in memory, so the tables hold every event read."""
        flush = self.store.projection.flush_building
        if flush is not None and self.gen.building:
            async with self.sessions() as session, session.begin():
                await flush(session, self.gen)

    def _report(self, phase: str, total: int) -> None:
        if self.on_progress is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.events / elapsed
        left = max(total - self.events, 0)
        self.on_progress(
            Progress(phase, self.events, total, rate, left / rate if rate > 0 else None)
        )


async def replay(
    projection: Projection,
    db: Database,
    codec: AvroCodec,
    bootstrap: str,
    *,
    verify: bool = False,
    on_progress: OnProgress | None = None,
    batch: int = 5000,
    readers: int = 0,
    deadline_s: float = 120.0,
    drop_grace_s: float = 1.0,
) -> ReplayReport:
    """Rebuilds ``projection`` into a new generation and switches to it (or, with ``verify``,
    compares it with the live one and drops it). ``readers`` > 0: that many reader processes
    read, decode and collect the rebuild from offset 0 (``events.replay_readers``), for a
    projection that takes batches; the catch-up after it is read in this process."""
    args = (projection, db, codec, bootstrap, verify, on_progress, batch, deadline_s)
    if readers <= 0 or projection.collect is None:
        return await _replay(*args, drop_grace_s, None, False)
    try:
        try:
            # Started first: they import what they need while the replay sets up.
            async with reader_processes(readers) as pool:
                return await _replay(*args, drop_grace_s, pool, True)
        except NotCoPartitioned as exc:
            # The building generation is left behind, as by a killed replay: dropped below.
            log.warning("%s: rebuilding with readers that keep nothing: %s", projection.name, exc)
        async with reader_processes(readers) as pool:
            return await _replay(*args, drop_grace_s, pool, False)
    except PoisonInReaders as exc:
        # Rare (an event the live runner dead-lettered): the readers' batches are folded
        # values, not events, so this process reads again and skips the events at fault.
        log.warning("%s: %s; rebuilding in this process", projection.name, exc)
    return await _replay(*args, drop_grace_s, None, False)


async def _replay(
    projection: Projection,
    db: Database,
    codec: AvroCodec,
    bootstrap: str,
    verify: bool,
    on_progress: OnProgress | None,
    batch: int,
    deadline_s: float,
    drop_grace_s: float,
    pool: Readers | None,
    keep_keys: bool,
) -> ReplayReport:
    store = ProjectionStore(projection, db)
    active = await store.ensure()
    _, leftover = await store.state()
    if leftover is not None:
        await store.drop_generation(leftover)  # a replay that was killed midway
    number = max(active, leftover or 0) + 1
    await _set_building(db, projection.name, number)
    await store.create_tables(number)
    started = time.monotonic()
    name = f"replay-{projection.name}-{number}"
    consumer = reader(bootstrap, name)
    try:
        await consumer.start()  # inside: a consumer that could not start still holds a client
        tps = await partitions_of(bootstrap, projection.topics)
        await seek_to(consumer, tps, {})
        if pool is not None:
            consumer.pause(*tps)  # the readers fetch the rebuild: no prefetching meanwhile
            if _keeps_keys(projection, tps, keep_keys):
                await _by_number(pool, tps)  # any more readers import while offsets are read
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        total = sum(end[tp] - begin[tp] for tp in tps)
        gen = store.generation(number)
        gen.building = True
        report = ReplayReport(projection.name, number, 0, 0.0, switched=False)
        scratch = (
            _scratch(db, projection.name, number)
            if pool is not None
            else contextlib.nullcontext(None)
        )
        async with contextlib.AsyncExitStack() as stack:
            scratch_dir = stack.enter_context(scratch)
            sessions = await stack.enter_async_context(checkpoints_aside(db))
            builder = _Builder(
                store, codec, gen, consumer, tps, begin, batch, on_progress, sessions
            )
            if pool is not None:
                await builder.fill_with_readers(
                    end, "rebuild", total, pool, bootstrap, name, keep_keys, scratch_dir
                )
            else:
                await builder.fill_to(end, "rebuild", total)
            if verify:
                report.differences = await _verify(store, builder, active, begin, deadline_s)
            else:
                latest = await consumer.end_offsets(tps)
                await builder.fill_to(
                    latest, "catch-up", total + sum(latest[tp] - end[tp] for tp in tps)
                )
            # All read: the consumer closes while the switch and the last checkpoint run.
            stopping = asyncio.ensure_future(consumer.stop())
            if not verify:
                await _switch(db, projection.name, number)
                report.switched = True
            report.events = builder.events
            report.undecodable = builder.undecodable
            report.skipped = builder.skipped
            report.readers = builder.readers
            report.seconds = time.monotonic() - started
    except BaseException:
        await consumer.stop()
        raise
    await stopping
    if report.switched:
        # Let reads that resolved the old generation just before the switch finish.
        await asyncio.sleep(drop_grace_s)
        await store.drop_generation(active)
    else:
        await store.drop_generation(number)
        await _set_building(db, projection.name, None)
    return report


def _scratch(
    db: Database, projection: str, number: int
) -> contextlib.AbstractContextManager[str | None]:
    """A directory for files readers hand to the writer: when the replay writes a SQLite file
    on a connection of its own, which can attach them (removed once that connection has
    detached them). Beside the database file: on the disk that is about to hold the same
    rows, rather than in a temp directory that may be small, or in memory. Those a killed
    replay of the projection left behind are removed first, as its generation is."""
    path = sqlite_file(db.url)
    if path is None or not writes_aside(db):
        return contextlib.nullcontext(None)
    directory = os.path.dirname(os.path.abspath(path))
    stale = re.compile(rf"\.replay-{re.escape(projection)}-\d+-")
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False) and stale.match(entry.name):
            shutil.rmtree(entry.path, ignore_errors=True)
    return tempfile.TemporaryDirectory(
        prefix=f".replay-{projection}-{number}-", dir=directory, ignore_cleanup_errors=True
    )


def _keeps_keys(projection: Projection, tps: list[TopicPartition], keep_keys: bool) -> bool:
    """Whether readers take ``tps`` by partition number with the projection's reader
    collector (which keeps what it collects per key)."""
    return keep_keys and projection.reader_collector is not None and co_partitioned(tps)


async def _by_number(pool: Readers, tps: list[TopicPartition]) -> int:
    """How many readers take ``tps`` by partition number (``readers_by_number`` of the
    pool's size), with the processes that takes started."""
    readers = readers_by_number(len({tp.partition for tp in tps}), len(pool.procs))
    if readers > len(pool.procs):
        await pool.spawn(readers - len(pool.procs))
    return readers


async def _set_building(db: Database, name: str, number: int | None) -> None:
    async with db.session() as s, s.begin():
        await s.execute(
            update(projections)
            .where(projections.c.projection == name)
            .values(building_generation=number, updated_at=utcnow())
        )


async def _switch(db: Database, name: str, number: int) -> None:
    async with db.session() as s, s.begin():
        await s.execute(
            update(projections)
            .where(projections.c.projection == name)
            .values(active_generation=number, building_generation=None, updated_at=utcnow())
        )


async def _verify(
    store: ProjectionStore, builder: _Builder, active: int, begin: Positions, deadline_s: float
) -> list[str]:
    """Compares the rebuilt generation with the live one at the very same positions."""
    end = time.monotonic() + deadline_s
    while True:
        live = {tp: store_pos for tp, store_pos in (await store.offsets(active)).items()}
        live = {tp: live.get(tp, begin[tp]) for tp in builder.tps}
        if any(builder.positions[tp] > live[tp] for tp in builder.tps):
            if time.monotonic() > end:
                raise TimeoutError("the live projection did not catch up with the rebuild")
            await asyncio.sleep(0.2)  # poll interval while the live projection catches up
            continue
        await builder.fill_to(live, "verify", builder.events)
        async with store.db.session() as session, session.begin():
            await store.active_for_update(session)  # holds the live runner still
            now = await store.offsets(active, session)
            if {tp: now.get(tp, begin[tp]) for tp in builder.tps} == live:
                return await compare(
                    session, store.generation(active), store.generation(builder.gen.number)
                )
        if time.monotonic() > end:
            raise TimeoutError("the live projection kept moving; verify gave up")


async def compare(session: AsyncSession, live: Generation, rebuilt: Generation) -> list[str]:
    """Row differences between two generations, table by table, keyed by primary key."""
    out: list[str] = []
    for base, table in live.tables.items():
        other = rebuilt[base]
        a = await _rows(session, table)
        b = await _rows(session, other)
        for key in sorted(set(a) | set(b), key=repr):
            if key not in b:
                out.append(f"{base} {key}: only in the live projection")
            elif key not in a:
                out.append(f"{base} {key}: only in the rebuild")
            elif a[key] != b[key]:
                cols = [c for c in a[key] if a[key][c] != b[key].get(c)]
                out.append(f"{base} {key}: differs in {', '.join(cols)}")
            if len(out) >= MAX_DIFFERENCES:
                return out
    return out


async def _rows(session: AsyncSession, table: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    keys = list(table.primary_key.columns)
    rows = (await session.execute(select(table))).mappings().all()
    return {tuple(r[c.name] for c in keys): dict(r) for r in rows}
