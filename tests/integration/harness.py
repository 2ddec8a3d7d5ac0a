"""Pieces shared by the integration tests: a test catalogue, a test service, Kafka reads."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import MetaData, func, insert, select

from bench.common import applied_table
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.consumer import EventConsumer
from events.db import Database
from events.envelope import Event
from events.kafka import KafkaConnection
from events.models import EventModel
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay
from events.routing import PermanentError, Router
from events.tables import inbox
from events.tables import metadata as platform_metadata

FIXTURE_SCHEMAS = Path(__file__).resolve().parent.parent / "fixtures" / "schemas"


class Ping(EventModel):
    aggregate_id: str
    seq: int
    note: str = ""


class Pong(EventModel):
    aggregate_id: str
    seq: int


test_metadata = MetaData()
applied = applied_table("applied", test_metadata)


def codec_for(ping_topic: str, pong_topic: str | None = None) -> AvroCodec:
    routes = {"Ping": ping_topic, "Pong": pong_topic or f"{ping_topic}-pong"}
    return AvroCodec(Catalogue.load(FIXTURE_SCHEMAS).retarget(routes))


async def new_database(url: str) -> Database:
    db = Database(url)
    await db.create_all(platform_metadata, test_metadata)
    return db


def ping_router(*, emit_pong: bool = False) -> Router:
    router = Router()

    @router.on(Ping)
    async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
        if event.payload.note == "fail":
            raise RuntimeError(f"handler refuses seq {event.payload.seq}")
        if event.payload.note == "permanent":
            raise PermanentError(f"seq {event.payload.seq} can never apply")
        await uow.session.execute(
            insert(applied).values(
                aggregate_id=event.payload.aggregate_id,
                seq=event.payload.seq,
                event_id=event.event_id,
            )
        )
        if emit_pong:
            uow.emit(
                Pong(aggregate_id=event.payload.aggregate_id, seq=event.payload.seq),
                key=event.payload.aggregate_id,
            )

    return router


def ping_consumer(
    name: str,
    topic: str,
    *,
    db: Database,
    codec: AvroCodec,
    bootstrap: str,
    emit_pong: bool = False,
    outbox: Outbox | None = None,
    **options: Any,
) -> EventConsumer:
    """A consumer (group ``name``) of ``topic`` applying pings with :func:`ping_router`; its
    outbox is ``Outbox(codec, name)`` unless one is given; ``options`` go to EventConsumer."""
    return EventConsumer(
        name=name,
        topics=[topic],
        router=ping_router(emit_pong=emit_pong),
        db=db,
        codec=codec,
        outbox=Outbox(codec, name) if outbox is None else outbox,
        kafka=KafkaConnection(bootstrap),
        **options,
    )


async def write_pings(
    db: Database,
    outbox: Outbox,
    aggregates: list[str],
    per_aggregate: int,
    *,
    per_tx: int = 7,
    start: int = 0,
) -> list[tuple[str, int]]:
    """Writes pings through units of work, interleaving aggregates; returns them in order."""
    order = [(agg, seq) for seq in range(start, start + per_aggregate) for agg in aggregates]
    for first in range(0, len(order), per_tx):
        async with UnitOfWork(db, outbox) as uow:
            for agg, seq in order[first : first + per_tx]:
                uow.emit(Ping(aggregate_id=agg, seq=seq), key=agg)
            await uow.commit()
    return order


async def applied_rows(db: Database) -> list[tuple[str, int]]:
    async with db.session() as s:
        rows = (
            await s.execute(select(applied.c.aggregate_id, applied.c.seq).order_by(applied.c.id))
        ).all()
    return [(r[0], r[1]) for r in rows]


async def inbox_count(db: Database, consumer: str) -> int:
    async with db.session() as s:
        n = (
            await s.execute(
                select(func.count()).select_from(inbox).where(inbox.c.consumer == consumer)
            )
        ).scalar_one()
    return int(n)


def assert_per_key_order(rows: list[tuple[str, int]]) -> None:
    last: dict[str, int] = {}
    for agg, seq in rows:
        assert seq > last.get(agg, -1), f"{agg}: seq {seq} applied after {last[agg]}"
        last[agg] = seq


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])


async def topic_size(bootstrap: str, topic: str) -> int:
    # A group id avoids aiokafka's group-less coordinator, whose stop() can raise
    # CancelledError when it never ran.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=f"size-{uuid.uuid4().hex}"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, expected: int, deadline_s: float = 30) -> list[Any]:
    """Reads ``expected`` records from the start of ``topic`` (fails after the deadline)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(deadline_s):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)
    finally:
        await consumer.stop()
    return records


@dataclass
class Running:
    consumer: EventConsumer
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    await consumer.start()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield Running(consumer, stop, task)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_relay(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def service_outbox_on_postgres(
    new_topic: Any, new_db: Any, db_backend: str, why: str
) -> tuple[str, AvroCodec, Database, Outbox]:
    """A 3-partition ping topic, a service database and its outbox, for a test that needs a
    database server (skipped on SQLite, saying ``why``; the suite runs it on PostgreSQL)."""
    if db_backend != "postgres":
        pytest.skip(why)
    topic = await new_topic(partitions=3)
    codec = codec_for(topic)
    return topic, codec, await new_db("service"), Outbox(codec, "service")
