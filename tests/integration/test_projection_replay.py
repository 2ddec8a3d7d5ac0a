"""Projections keep offsets with their rows; replay rebuilds beside the live one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy import Column, Integer, MetaData, String, Table, select, update

from events.codec import AvroCodec
from events.db import Database
from events.envelope import Event
from events.kafka import KafkaConnection
from events.outbox import Outbox
from events.projection import Projection, ProjectionRunner
from events.projection_store import Generation, ProjectionStore
from events.relay import OutboxRelay
from events.replay import replay
from events.replay_readers import READER_ENTRY, ReaderError
from tests.integration.harness import Ping, codec_for, write_pings
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


def define_counts(md: MetaData, suffix: str) -> None:
    Table(
        f"ping_counts{suffix}",
        md,
        Column("aggregate_id", String, primary_key=True),
        Column("pings", Integer, nullable=False),
        Column("last_seq", Integer, nullable=False),
    )


def counts_projection(topic: str) -> Projection:
    projection = Projection(f"counts-{unique('p')}", [topic], define_counts)

    @projection.on(Ping)
    async def count(session, gen: Generation, event: Event[Ping]) -> None:
        t = gen["ping_counts"]
        p = event.payload
        row = (await session.execute(select(t).where(t.c.aggregate_id == p.aggregate_id))).first()
        if row is None:
            await session.execute(
                t.insert().values(aggregate_id=p.aggregate_id, pings=1, last_seq=p.seq)
            )
        else:
            await session.execute(
                update(t)
                .where(t.c.aggregate_id == p.aggregate_id)
                .values(pings=t.c.pings + 1, last_seq=p.seq)
            )

    return projection


# The same counts through whole batches (module level: reader processes unpickle them).


def collect_counts(events: list[Event[Any]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for event in events:
        p = event.payload  # the decoded dict: batch functions take no model
        n, last = out.get(p["aggregate_id"], (0, -1))
        out[p["aggregate_id"]] = (n + 1, max(last, p["seq"]))
    return out


async def write_counts(session, gen: Generation, counts: dict[str, tuple[int, int]]) -> None:
    t = gen["ping_counts"]
    for agg, (n, last) in sorted(counts.items()):
        row = (await session.execute(select(t).where(t.c.aggregate_id == agg))).first()
        if row is None:
            await session.execute(t.insert().values(aggregate_id=agg, pings=n, last_seq=last))
        else:
            await session.execute(
                update(t)
                .where(t.c.aggregate_id == agg)
                .values(pings=row.pings + n, last_seq=max(row.last_seq, last))
            )


def collect_unpicklable(events: list[Event[Any]]) -> Any:
    counts = collect_counts(events)
    return lambda: counts  # a projection bug: a reader cannot send this


def batch_counts(topic: str, name: str | None = None, collect=collect_counts) -> Projection:
    projection = Projection(name or f"batch-{unique('p')}", [topic], define_counts)
    projection.on_batch([Ping], collect, write_counts)
    return projection


async def rows(db, store: ProjectionStore) -> dict[str, tuple[int, int]]:
    active, _ = await store.state()
    t = store.generation(active)["ping_counts"]
    async with db.session() as s:
        return {r[0]: (r[1], r[2]) for r in (await s.execute(select(t))).all()}


async def produce(kafka_bootstrap, db, codec, aggregates, per, start=0):
    outbox = Outbox(codec, "producer")
    written = await write_pings(db, outbox, aggregates, per, per_tx=50, start=start)
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap))
    await relay.drain()
    await relay.close()
    return written


@contextlib.asynccontextmanager
async def live(runner: ProjectionRunner):
    stop = asyncio.Event()
    await runner.start()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def expected(written):
    out: dict[str, tuple[int, int]] = {}
    for agg, seq in written:
        n, _ = out.get(agg, (0, -1))
        out[agg] = (n + 1, seq)
    return out


@pytest.fixture
def scene(new_topic, new_db):
    """Makes a fresh topic of that many partitions, its codec, and two databases: one whose
    outbox publishes the events, one the projection reads into."""

    async def make(partitions: int) -> tuple[str, AvroCodec, Database, Database]:
        topic = await new_topic(partitions=partitions)
        return topic, codec_for(topic), await new_db("producer"), await new_db("read")

    return make


async def test_restart_neither_loses_nor_reapplies(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(3)
    projection = counts_projection(topic)
    aggs = [unique("a") for _ in range(5)]
    written = await produce(kafka_bootstrap, producer_db, codec, aggs, 20)
    runner = ProjectionRunner(
        projection, read_db, codec, KafkaConnection(kafka_bootstrap), batch=37
    )
    async with live(runner):
        await eventually(lambda: runner.applied >= len(written), what="first pass")
    written += await produce(kafka_bootstrap, producer_db, codec, aggs, 10, start=20)
    again = ProjectionRunner(projection, read_db, codec, KafkaConnection(kafka_bootstrap))
    async with live(again):
        await eventually(lambda: again.applied >= 50, what="second pass")
        assert await rows(read_db, again.store) == expected(written)
    assert again.applied == 50  # only the new events


async def test_read_your_writes_waits_for_the_position(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(1)
    runner = ProjectionRunner(
        counts_projection(topic), read_db, codec, KafkaConnection(kafka_bootstrap)
    )
    async with live(runner):
        assert not await runner.wait_for({TopicPartition(topic, 0): 0}, timeout_s=0.3)
        await produce(kafka_bootstrap, producer_db, codec, [unique("a")], 3)
        assert await runner.wait_for({TopicPartition(topic, 0): 2}, timeout_s=20)
        assert not runner.reached({TopicPartition(topic, 0): 3})


async def test_a_reader_waiting_for_its_writes_cuts_the_linger_short(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(1)
    # A linger far longer than the wait: the wait can only succeed if the reader ends it.
    runner = ProjectionRunner(
        counts_projection(topic), read_db, codec, KafkaConnection(kafka_bootstrap), linger_s=600
    )
    async with live(runner):
        await produce(kafka_bootstrap, producer_db, codec, [unique("a")], 1)
        await eventually(lambda: runner.applied >= 1, what="the first batch (then it lingers)")
        await produce(kafka_bootstrap, producer_db, codec, [unique("a")], 1, start=1)
        assert await runner.wait_for({TopicPartition(topic, 0): 1}, timeout_s=30)


async def test_replay_under_live_traffic_matches_a_rebuild(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(3)
    projection = counts_projection(topic)
    aggs = [unique("a") for _ in range(10)]
    written = await produce(kafka_bootstrap, producer_db, codec, aggs, 100)
    runner = ProjectionRunner(projection, read_db, codec, KafkaConnection(kafka_bootstrap))
    async with live(runner):
        await eventually(lambda: runner.applied >= len(written), what="live caught up")
        traffic = asyncio.create_task(
            produce(kafka_bootstrap, producer_db, codec, aggs, 50, start=100)
        )
        answers = []

        async def reader_loop():
            while not traffic.done() or len(answers) < 3:
                answers.append(await rows(read_db, runner.store))
                await asyncio.sleep(0.01)  # poll interval of a reader during the replay

        reading = asyncio.create_task(reader_loop())
        report = await replay(
            projection,
            read_db,
            codec,
            KafkaConnection(kafka_bootstrap),
            batch=250,
            drop_grace_s=0.1,
        )
        written += await traffic
        await reading
        assert report.switched and report.generation == 2 and report.events >= len(written) - 500
        await eventually(
            lambda: runner.generation == 2 and runner.applied > 0,
            what="live runner follows the new generation",
        )
        want = expected(written)
        await eventually(
            lambda: _equal(read_db, runner.store, want),
            deadline_s=30,
            what="rebuilt rows equal a from-scratch count",
        )
    assert all(answers), "the API had rows to read throughout the replay"

    verify = await replay(projection, read_db, codec, KafkaConnection(kafka_bootstrap), verify=True)
    assert verify.differences == [] and not verify.switched
    assert (await ProjectionStore(projection, read_db).state()) == (2, None)


async def _equal(db, store, want) -> bool:
    return await rows(db, store) == want


async def test_killed_replay_changes_nothing_and_can_run_again(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(2)
    projection = counts_projection(topic)
    written = await produce(
        kafka_bootstrap, producer_db, codec, [unique("a") for _ in range(4)], 250
    )
    runner = ProjectionRunner(projection, read_db, codec, KafkaConnection(kafka_bootstrap))
    async with live(runner):
        await eventually(lambda: runner.applied >= len(written), what="live caught up")
        before = await rows(read_db, runner.store)
        seen = []

        def kill_midway(progress):
            seen.append(progress.events)
            if progress.events >= 300:
                raise KeyboardInterrupt  # stands for the process being killed

        with pytest.raises(KeyboardInterrupt):
            await replay(
                projection,
                read_db,
                codec,
                KafkaConnection(kafka_bootstrap),
                batch=100,
                on_progress=kill_midway,
            )
        assert await ProjectionStore(projection, read_db).state() == (1, 2)
        assert await rows(read_db, runner.store) == before == expected(written)
        report = await replay(
            projection, read_db, codec, KafkaConnection(kafka_bootstrap), drop_grace_s=0.1
        )
        assert report.switched and report.generation == 3
        await eventually(lambda: runner.generation == 3, what="live follows generation 3")
        assert await rows(read_db, runner.store) == expected(written)


async def test_reader_processes_rebuild_what_one_process_does(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(3)
    projection = batch_counts(topic)
    written = await produce(
        kafka_bootstrap, producer_db, codec, [unique("a") for _ in range(7)], 60
    )
    store = ProjectionStore(projection, read_db)
    report = await replay(
        projection, read_db, codec, KafkaConnection(kafka_bootstrap), batch=25, readers=2
    )
    assert report.switched and report.events == len(written)
    assert await rows(read_db, store) == expected(written)
    alone = await replay(
        projection, read_db, codec, KafkaConnection(kafka_bootstrap), batch=25, readers=0
    )
    assert alone.generation == report.generation + 1
    assert await rows(read_db, store) == expected(written)


async def test_reader_processes_beyond_the_partitions_are_let_go(kafka_bootstrap, scene):
    # Reader processes start before the replay knows how many partitions there are.
    topic, codec, producer_db, read_db = await scene(1)
    projection = batch_counts(topic)
    written = await produce(
        kafka_bootstrap, producer_db, codec, [unique("a") for _ in range(3)], 40
    )
    report = await asyncio.wait_for(
        replay(projection, read_db, codec, KafkaConnection(kafka_bootstrap), batch=25, readers=3),
        60,
    )
    assert report.switched and report.events == len(written)
    assert await rows(read_db, ProjectionStore(projection, read_db)) == expected(written)


async def test_a_failing_reader_stops_the_replay_and_changes_nothing(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(2)
    good = batch_counts(topic)
    bad = batch_counts(topic, good.name, collect_unpicklable)
    written = await produce(
        kafka_bootstrap, producer_db, codec, [unique("a") for _ in range(3)], 40
    )
    runner = ProjectionRunner(good, read_db, codec, KafkaConnection(kafka_bootstrap))
    async with live(runner):
        await eventually(lambda: runner.applied >= len(written), what="live caught up")
        with pytest.raises(ReaderError, match=r"(?i)pickl"):
            await replay(bad, read_db, codec, KafkaConnection(kafka_bootstrap), batch=30, readers=2)
        assert await ProjectionStore(good, read_db).state() == (1, 2)
        assert await rows(read_db, runner.store) == expected(written)
        report = await replay(
            good, read_db, codec, KafkaConnection(kafka_bootstrap), readers=2, drop_grace_s=0.1
        )
        assert report.switched and report.generation == 3
        await eventually(lambda: runner.generation == 3, what="live follows generation 3")
        assert await rows(read_db, runner.store) == expected(written)


async def test_a_killed_reader_fails_the_replay_instead_of_hanging_it(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(2)
    projection = batch_counts(topic)
    written = await produce(
        kafka_bootstrap, producer_db, codec, [unique("a") for _ in range(4)], 100
    )
    task = asyncio.create_task(
        replay(projection, read_db, codec, KafkaConnection(kafka_bootstrap), batch=10, readers=1)
    )

    def a_reader() -> int | None:
        # Reader processes are this process's children running READER_ENTRY.
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and READER_ENTRY.encode() in cmdline:
                return int(proc.name)
        return None

    pid = await eventually(a_reader, what="a reader process to start")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ReaderError, match="died"):
        await asyncio.wait_for(task, 60)
    assert await ProjectionStore(projection, read_db).state() == (1, 2)
    report = await replay(projection, read_db, codec, KafkaConnection(kafka_bootstrap), readers=1)
    assert report.switched and report.generation == 3
    assert await rows(read_db, ProjectionStore(projection, read_db)) == expected(written)


async def test_a_reader_that_cannot_import_the_collect_function_says_so(kafka_bootstrap, scene):
    topic, codec, producer_db, read_db = await scene(2)
    await produce(kafka_bootstrap, producer_db, codec, [unique("a")], 10)
    # A module only this process has: the reader cannot import it to unpickle its spec.
    only_here = types.ModuleType(unique("only_here").replace("-", "_"))
    exec("def collect(events):\n    return []\n", only_here.__dict__)
    only_here.collect.__module__ = only_here.__name__
    sys.modules[only_here.__name__] = only_here
    try:
        projection = batch_counts(topic, collect=only_here.collect)
        with pytest.raises(ReaderError, match=f"No module named '{only_here.__name__}'"):
            await replay(projection, read_db, codec, KafkaConnection(kafka_bootstrap), readers=1)
    finally:
        del sys.modules[only_here.__name__]
