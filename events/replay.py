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
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec
from events.db import Database, sqlite_file
from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.projection import Projection
from events.projection_store import Generation, ProjectionStore
from events.reading import NotCoPartitioned, Positions, reader, seek_to
from events.replay_builder import (
    Builder,
    OnProgress,
    PoisonInReaders,
    Progress,
    by_number,
    keeps_keys,
)
from events.replay_readers import Readers, reader_processes
from events.sqlite_wal import checkpoints_aside, writes_aside
from events.tables import projections
from events.topics import partitions_of

log = logging.getLogger(__name__)

__all__ = ["Progress", "ReplayReport", "compare", "replay"]

MAX_DIFFERENCES = 50


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


async def replay(
    projection: Projection,
    db: Database,
    codec: AvroCodec,
    kafka: KafkaConnection,
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
    args = (projection, db, codec, kafka, verify, on_progress, batch, deadline_s)
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
    kafka: KafkaConnection,
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
    consumer = reader(kafka, name)
    try:
        await consumer.start()  # inside: a consumer that could not start still holds a client
        tps = await partitions_of(kafka, projection.topics)
        await seek_to(consumer, tps, {})
        if pool is not None:
            consumer.pause(*tps)  # the readers fetch the rebuild: no prefetching meanwhile
            if keeps_keys(projection, tps, keep_keys):
                await by_number(pool, tps)  # any more readers import while offsets are read
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
            builder = Builder(store, codec, gen, consumer, tps, begin, batch, on_progress, sessions)
            if pool is not None:
                await builder.fill_with_readers(
                    end, "rebuild", total, pool, kafka, name, keep_keys, scratch_dir
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
    store: ProjectionStore, builder: Builder, active: int, begin: Positions, deadline_s: float
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
