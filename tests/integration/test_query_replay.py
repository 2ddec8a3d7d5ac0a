"""Rebuilding the query projection: under live traffic, killed midway, and from the command
line, with the API answering throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from events.db import Database, is_sqlite, sqlite_file
from events.kafka import KafkaConnection
from events.projection_store import ProjectionStore
from events.replay import Progress, ReplayReport, replay
from events.sqlite_wal import writes_aside
from events.tables import metadata as platform_metadata
from services.query import batch as query_batch
from services.query import sql as query_sql
from services.query.projections import build_projection
from tests.integration.test_query_kit import (
    PATHS,
    QueryEnv,
    Saga,
    min_position,
    publish_saga,
    query_env,
)
from tests.support import eventually, run_module

pytestmark = pytest.mark.integration
__all__ = ["query_env"]


def busy_saga(orders: int, run: str | None = None) -> Saga:
    saga = Saga(run=run) if run else Saga()
    skus = [saga.sku(f"s{i}") for i in range(4)]
    for sku in skus:
        saga.restock(sku, 1000)
    custs = [saga.customer(f"c{i}") for i in range(5)]
    for cust in custs:
        saga.deposit(cust, 1_000_000)
    for i in range(orders):
        saga.order(PATHS[i % len(PATHS)], custs[i % 5], [(skus[i % 4], 1 + i % 3, 100)])
    return saga


async def dump(
    db: Database, store: ProjectionStore, generation: int | None = None
) -> dict[str, Any]:
    """Every row of every table of the (active) generation, keyed by base table name."""
    number = generation if generation is not None else (await store.state())[0]
    gen = store.generation(number)
    out: dict[str, Any] = {}
    async with db.session() as s:
        for base, table in gen.tables.items():
            rows = (await s.execute(select(table))).all()
            out[base] = Counter(tuple(r) for r in rows)
    return out


async def rebuild_from_scratch(env: QueryEnv, url: str) -> dict[str, Any]:
    db = Database(url)
    await db.create_all(platform_metadata)
    projection = build_projection(env.prefix)
    try:
        report = await replay(
            projection, db, env.codec, KafkaConnection(env.bootstrap), drop_grace_s=0
        )
        return await dump(db, ProjectionStore(projection, db), report.generation)
    finally:
        await db.dispose()


class Prober:
    """Reads every endpoint in a loop and keeps every status it got."""

    def __init__(self, env: QueryEnv, saga: Saga) -> None:
        self.env, self.saga = env, saga
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        order = next(iter(self.saga.orders.values()))
        paths = [
            "/orders?limit=20",
            f"/orders/{order.order_id}",
            f"/orders/{order.order_id}/timeline",
            f"/customers/{order.customer_id}",
            f"/skus/{order.lines[0]['sku']}",
            "/projections",
        ]
        while not self.stop.is_set():
            for path in paths:
                r = await self.env.http.get("/api/v1" + path)
                self.statuses[r.status_code] += 1
                if r.status_code != 200:
                    self.failures.append(f"{path}: {r.status_code} {r.text[:200]}")
            await asyncio.sleep(0.005)  # a client's pace, so the projection gets the loop


async def test_replay_under_live_traffic_ends_as_a_rebuild_and_reads_never_fail(
    query_env: QueryEnv, database_url: Callable[[str], str]
):
    env = query_env
    first = busy_saga(120)
    await env.caught_up(await publish_saga(env, first))
    before = await dump(env.ctx.db, env.runner.store)
    assert sum(before["query_timeline"].values()) == sum(
        len(o.events) for o in first.orders.values()
    )

    prober = Prober(env, first)
    reading = asyncio.create_task(prober.run())
    second = busy_saga(120)
    traffic = asyncio.create_task(publish_saga(env, second))
    # Rebuilt by reader processes (the command's default on a multi-core machine); the
    # from-scratch rebuild it is compared with below runs in this process.
    report = await replay(
        env.runner.projection,
        env.ctx.db,
        env.codec,
        KafkaConnection(env.bootstrap),
        batch=150,
        readers=2,
        drop_grace_s=0.2,
    )
    published = await traffic
    assert report.switched and report.generation == 2
    await eventually(lambda: env.runner.generation == 2, what="the runner to follow generation 2")
    await env.caught_up(published)
    prober.stop.set()
    await reading
    assert prober.failures == [], prober.failures[:5]
    assert prober.statuses[200] > 20

    live = await dump(env.ctx.db, env.runner.store)
    assert live == await rebuild_from_scratch(env, database_url("scratch"))
    verify = await replay(
        env.runner.projection, env.ctx.db, env.codec, KafkaConnection(env.bootstrap), verify=True
    )
    assert verify.differences == [] and not verify.switched
    r = await env.get("/projections")
    assert r.json()[0]["active_generation"] == 2 and r.json()[0]["building_generation"] is None


async def test_a_rebuild_that_outgrows_its_order_cache_writes_the_same_rows(
    query_env: QueryEnv, monkeypatch: pytest.MonkeyPatch
):
    env = query_env
    await env.caught_up(await publish_saga(env, busy_saga(60)))
    live = await dump(env.ctx.db, env.runner.store)
    # A handful of orders per cache: every batch writes and forgets them, and the next
    # batches load the orders they touch again (what a replay of millions of orders does).
    monkeypatch.setattr(query_batch, "ORDER_CACHE_LIMIT", 7)
    report = await replay(
        env.runner.projection,
        env.ctx.db,
        env.codec,
        KafkaConnection(env.bootstrap),
        batch=40,
        drop_grace_s=0,
    )
    assert report.switched
    assert await dump(env.ctx.db, env.runner.store, report.generation) == live


FALLBACK = "rebuilding with readers that keep nothing"  # the replay's warning


async def replay_logged(
    env: QueryEnv, caplog: pytest.LogCaptureFixture, *, readers: int, batch: int
) -> ReplayReport:
    """A replay of the live projection, with the replay's warnings captured."""
    with caplog.at_level(logging.WARNING, logger="events.replay"):
        return await replay(
            env.runner.projection,
            env.ctx.db,
            env.codec,
            KafkaConnection(env.bootstrap),
            batch=batch,
            readers=readers,
            drop_grace_s=0,
        )


async def test_readers_that_share_partitions_by_key_rebuild_the_same_rows(
    query_env: QueryEnv, caplog: pytest.LogCaptureFixture
):
    env = query_env
    published = await publish_saga(env, busy_saga(60))
    await env.caught_up(published)
    live = await dump(env.ctx.db, env.runner.store)
    # Four readers, three partition numbers: every reader reads every partition and takes
    # the orders whose key hashes to it.
    report = await replay_logged(env, caplog, readers=4, batch=40)
    assert FALLBACK not in caplog.text  # no order was taken by two readers
    assert report.switched and report.events == len(published)  # each record taken once
    assert await dump(env.ctx.db, env.runner.store, report.generation) == live


async def test_readers_hand_their_rows_over_in_files_beside_a_sqlite_database(
    query_env: QueryEnv, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    env = query_env
    await env.caught_up(await publish_saga(env, busy_saga(60)))
    live = await dump(env.ctx.db, env.runner.store)
    handed: list[tuple[str, int]] = []
    copy = query_sql.insert_file

    def counted(session: Any, table: Any, rows: Any, **options: Any) -> None:
        handed.append((table.name, rows.count))
        copy(session, table, rows, **options)

    monkeypatch.setattr(query_sql, "insert_file", counted)
    # On PostgreSQL the URL's database is a name, not a file: there is no "beside".
    path = sqlite_file(env.ctx.db.url) if is_sqlite(env.ctx.db.url) else None
    beside = os.path.dirname(path) if path else None
    if beside is not None:  # what a replay killed midway left there
        os.makedirs(os.path.join(beside, ".replay-query-7-x1y2z3", "deep"))
        os.makedirs(os.path.join(beside, ".replay-query2-7-keep"))  # another projection's
    report = await replay_logged(env, caplog, readers=2, batch=40)
    assert FALLBACK not in caplog.text
    assert await dump(env.ctx.db, env.runner.store, report.generation) == live
    if beside is None or not writes_aside(env.ctx.db):
        assert handed == []  # PostgreSQL: the rows travel pickled
        return
    handed_rows = Counter[str]()
    for table, count in handed:
        handed_rows[table.rsplit("_", 1)[0]] += count  # without the generation suffix
    assert handed_rows == {
        "query_timeline": sum(live["query_timeline"].values()),
        "query_orders": len(live["query_orders"]),
    }
    leftovers = [name for name in os.listdir(beside) if name.startswith(".")]
    assert leftovers == [".replay-query2-7-keep"]


@pytest.mark.parametrize("owners_remembered", [True, False], ids=["early", "by-the-table"])
async def test_orders_whose_events_span_partition_numbers_are_rebuilt_by_readers_that_keep_nothing(
    query_env: QueryEnv,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    owners_remembered: bool,
):
    env = query_env
    if not owners_remembered:  # past the limit: two readers' rows collide in the table
        monkeypatch.setattr(query_batch, "OWNERS_LIMIT", 0)
    saga = busy_saga(40)
    # Payment events keyed by customer, not order: an order's payment events land on other
    # partition numbers than its other events, so no reader holds all of its events.
    rekeyed = [
        dataclasses.replace(
            s, draft=dataclasses.replace(s.draft, key=s.draft.payload["customer_id"])
        )
        if s.producer == "payments" and "order_id" in s.draft.payload
        else s
        for s in saga.sent
    ]
    await env.caught_up(await publish_saga(env, saga, rekeyed))
    live = await dump(env.ctx.db, env.runner.store)
    report = await replay_logged(env, caplog, readers=2, batch=50)
    assert FALLBACK in caplog.text
    assert report.switched
    assert await dump(env.ctx.db, env.runner.store, report.generation) == live


async def test_a_killed_replay_changes_nothing_and_the_next_one_completes(query_env: QueryEnv):
    env = query_env
    saga = busy_saga(100)
    published = await publish_saga(env, saga)
    await env.caught_up(published)
    order = next(iter(saga.orders))
    answers = [f"/orders/{order}", f"/orders/{order}/timeline", "/orders?limit=500", "/projections"]
    before_rows = await dump(env.ctx.db, env.runner.store)
    before = {p: (await env.get(p)).json() for p in answers}

    def kill(progress: Progress) -> None:
        if progress.events >= 200:
            raise KeyboardInterrupt  # stands for the process being killed

    with pytest.raises(KeyboardInterrupt):
        await replay(
            env.runner.projection,
            env.ctx.db,
            env.codec,
            KafkaConnection(env.bootstrap),
            batch=50,
            on_progress=kill,
        )
    assert await env.runner.store.state() == (1, 2)  # a half-built generation, unused
    assert await dump(env.ctx.db, env.runner.store) == before_rows
    for path in answers:
        after = (await env.get(path)).json()
        if path == "/projections":
            assert after[0]["active_generation"] == 1 and after[0]["building_generation"] == 2
        else:
            assert after == before[path]

    report = await replay(
        env.runner.projection,
        env.ctx.db,
        env.codec,
        KafkaConnection(env.bootstrap),
        drop_grace_s=0.1,
    )
    assert report.switched and report.generation == 3
    await eventually(lambda: env.runner.generation == 3, what="the runner to follow generation 3")
    assert await dump(env.ctx.db, env.runner.store) == before_rows
    r = await env.get(f"/orders/{order}", min_position=min_position(published))
    assert r.json() == before[f"/orders/{order}"]


def run_cli(env: QueryEnv, *args: str) -> subprocess.CompletedProcess[str]:
    child = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": env.bootstrap,
        "TOPIC_PREFIX": env.prefix,
        "DATABASE_URL": env.settings.database_url,
    }
    return run_module("services.query.replay", *args, env=child)


async def test_the_replay_command(query_env: QueryEnv):
    env = query_env
    saga = busy_saga(30)
    await env.caught_up(await publish_saga(env, saga))

    done = await asyncio.to_thread(run_cli, env, "query")
    assert done.returncode == 0, done.stderr
    assert "rebuilt generation 2 from" in done.stdout and "now serving it" in done.stdout
    assert "events/s" in done.stderr and "ETA" in done.stderr  # the progress line
    await eventually(lambda: env.runner.generation == 2, what="the runner to follow the switch")

    checked = await asyncio.to_thread(run_cli, env, "query", "--verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "matches the live one" in checked.stdout

    unknown = await asyncio.to_thread(run_cli, env, "orders")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "unknown projection 'orders'; known: query"

    negative = await asyncio.to_thread(run_cli, env, "query", "--readers", "-1")
    assert negative.returncode == 2
    assert negative.stderr.strip() == "--readers must be 0 or more"


async def test_verify_reports_differences(query_env: QueryEnv):
    """A live row changed behind the projection's back shows up in --verify (exit 1)."""
    env = query_env
    saga = busy_saga(10)
    await env.caught_up(await publish_saga(env, saga))
    sku = next(iter(saga.orders.values())).lines[0]["sku"]
    gen = env.runner.store.generation(env.runner.generation)
    async with env.ctx.db.session() as s, s.begin():
        table = gen["query_skus"]
        await s.execute(table.update().where(table.c.sku == sku).values(received=-1))
    checked = await asyncio.to_thread(run_cli, env, "query", "--verify")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "1 difference(s)" in checked.stdout and f"query_skus ('{sku}',)" in checked.stdout


async def test_reads_served_during_a_replay_started_from_another_process(query_env: QueryEnv):
    env = query_env
    saga = busy_saga(60)
    await env.caught_up(await publish_saga(env, saga))
    prober = Prober(env, saga)
    reading = asyncio.create_task(prober.run())
    done = await asyncio.to_thread(run_cli, env, "query", "--batch", "40")
    prober.stop.set()
    await reading
    assert done.returncode == 0, done.stderr
    assert prober.failures == [], prober.failures[:5]
    await eventually(lambda: env.runner.generation == 2, what="the runner to follow the switch")
