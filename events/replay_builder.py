"""Filling a generation during a replay (events.replay): from the topics in this process,
or from what reader processes collected (events.replay_readers), never past a position per
partition, reporting progress as it goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from events.codec import AvroCodec
from events.envelope import Event
from events.isolation import Isolation, is_infrastructure
from events.kafka import KafkaConnection
from events.projection import PROJECTION_RETRY, Projection, apply_events
from events.projection_store import Generation, ProjectionStore
from events.reading import CollectorFactory, EachBatch, NotCoPartitioned, Positions, decode_records
from events.replay_readers import (
    ReaderError,
    Readers,
    ReaderSpec,
    below,
    co_partitioned,
    readers_by_number,
    split,
    split_by_number,
)
from events.sqlite_wal import Sessions

log = logging.getLogger("events.replay")


@dataclass
class Progress:
    phase: str
    events: int
    total: int
    rate: float
    eta_s: float | None


OnProgress = Callable[[Progress], None]


class PoisonInReaders(RuntimeError):
    """A batch collected by reader processes failed to apply: the replay reads again in
    this process, which finds and skips the events at fault (``Isolation``)."""


class Builder:
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
        kafka: KafkaConnection,
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
        if keeps_keys(projection, self.tps, keep_keys):
            assert projection.reader_collector is not None
            collector = projection.reader_collector
            readers = await by_number(pool, self.tps)
            shares = split_by_number(self.tps, readers)
        self.readers = len(shares)
        specs = [
            ReaderSpec(
                kafka,
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


def keeps_keys(projection: Projection, tps: list[TopicPartition], keep_keys: bool) -> bool:
    """Whether readers take ``tps`` by partition number with the projection's reader
    collector (which keeps what it collects per key)."""
    return keep_keys and projection.reader_collector is not None and co_partitioned(tps)


async def by_number(pool: Readers, tps: list[TopicPartition]) -> int:
    """How many readers take ``tps`` by partition number (``readers_by_number`` of the
    pool's size), with the processes that takes started."""
    readers = readers_by_number(len({tp.partition for tp in tps}), len(pool.procs))
    if readers > len(pool.procs):
        await pool.spawn(readers - len(pool.procs))
    return readers
