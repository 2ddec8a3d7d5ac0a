"""What every benchmark shares: the test event, fresh topics and databases, Kafka checks, timing.

The event is the ``Ping`` contract of ``tests/fixtures/schemas`` (the integration tests' event),
with a fixed-size note so that every run sends the same number of bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from bench.raw_decode import Decoder, RegistryDecoder
from events.catalogue import Catalogue, TopicSpec
from events.codec import AvroCodec
from events.db import Database, sqlite_url
from events.encoding import make_codec
from events.envelope import Event
from events.kafka import KafkaConnection
from events.models import EventModel
from events.outbox import UnitOfWork
from events.routing import Router
from events.schema_registry import register_catalogue
from events.settings import SchemaEncoding
from events.tables import inbox, outbox
from events.tables import metadata as platform_metadata
from events.topics import apply_topics
from infra.registry import down as registry_down
from infra.registry import private_spec as private_registry
from infra.registry import up as registry_up

FIXTURE_SCHEMAS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "schemas"
PARTITIONS = 3
AGGREGATES = 200
NOTE = "benchmark payload: one step of a numbered sequence, fixed size...."  # 64 chars
SERVICE = "bench"


class Ping(EventModel):
    aggregate_id: str
    seq: int
    note: str = ""


def applied_table(name: str, metadata: MetaData) -> Table:
    """The rows the Ping handler inserts; the integration tests' harness uses it too."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("aggregate_id", String, nullable=False),
        Column("seq", Integer, nullable=False),
        Column("event_id", String, nullable=False),
    )


bench_metadata = MetaData()
applied = applied_table("bench_applied", bench_metadata)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def aggregates() -> list[str]:
    return [f"order-{uuid.uuid4()}" for _ in range(AGGREGATES)]


def pings(n: int) -> list[Ping]:
    """``n`` pings over ``AGGREGATES`` keys, interleaved, each aggregate's seq increasing."""
    aggs = aggregates()
    return [
        Ping(aggregate_id=aggs[i % AGGREGATES], seq=i // AGGREGATES, note=NOTE) for i in range(n)
    ]


def codec_for(topic: str, registry: str | None = None) -> AvroCodec:
    """The Ping codec for ``topic``: single-object, or with ``registry`` (a Confluent-compatible
    URL) the registry wire format, the topic's subjects registered there first (untimed)."""
    catalogue = Catalogue.load(FIXTURE_SCHEMAS).retarget({"Ping": topic}, PARTITIONS)
    if registry is None:
        return AvroCodec(catalogue)
    register_catalogue(catalogue, registry)  # lookups only when already registered
    return make_codec(catalogue, SchemaEncoding("registry", registry))


def value_decoder(codec: AvroCodec, registry: str | None) -> Decoder:
    """What the raw side decodes values with: the project's codec for single-object (as
    before issue 20), fastavro with schemas cached by registry id for the registry format."""
    return codec if registry is None else RegistryDecoder(registry)


@contextlib.contextmanager
def schema_registry(root: Path, say: Callable[[str], None]) -> Iterator[str]:
    """A private schema registry (Apicurio, in memory) under ``root``; its Confluent URL."""
    spec = private_registry(root / "registry")
    say(f"starting a private schema registry on {spec.url}")
    try:
        registry_up(spec)
        yield spec.ccompat_url
    finally:
        say("stopping the private schema registry")
        registry_down(spec)


def ping_router(*, noop: bool = False) -> Router:
    """The handler inserts one row per event in the consumer's transaction (or nothing)."""
    router = Router()

    if noop:

        @router.on(Ping)
        async def on_ping_noop(uow: UnitOfWork, event: Event[Ping]) -> None:
            return None

        return router

    @router.on(Ping)
    async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
        # Staged: the batch's rows go in one multi-row INSERT at commit.
        uow.add(
            applied,
            aggregate_id=event.payload.aggregate_id,
            seq=event.payload.seq,
            event_id=event.event_id,
        )

    return router


async def new_database(path: Path) -> Database:
    db = Database(sqlite_url(path))
    await db.create_all(platform_metadata, bench_metadata)
    return db


async def count_rows(db: Database, table: Table) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def count_unsent(db: Database) -> int:
    async with db.session() as s:
        n = await s.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        )
        return int(n.scalar_one())


async def count_inbox(db: Database) -> int:
    return await count_rows(db, inbox)


# --------------------------------------------------------------------------- Kafka


def connection(kafka: str | KafkaConnection) -> KafkaConnection:
    """The benchmarks that run on a plaintext broker pass its address; bench.saga passes its
    (possibly secured) connection."""
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


async def new_topic(
    bootstrap: str | KafkaConnection, prefix: str, *, dead_letters: bool = False
) -> str:
    """A fresh topic with ``PARTITIONS`` partitions, whose leaders are known before return."""
    name = unique(prefix)
    await apply_topics(
        connection(bootstrap),
        [TopicSpec(name, PARTITIONS, -1, (), {})],
        dead_letters=dead_letters,
    )
    await wait_for_leaders(bootstrap, name)
    return name


async def wait_for_leaders(
    bootstrap: str | KafkaConnection, topic: str, deadline_s: float = 30.0
) -> None:
    admin = AIOKafkaAdminClient(**connection(bootstrap).client_options())
    await admin.start()
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                (described,) = await admin.describe_topics([topic])
                parts = described.get("partitions") or []
                if len(parts) == PARTITIONS and all(p["leader"] >= 0 for p in parts):
                    return
                await asyncio.sleep(0.05)  # poll interval; bounded by the timeout above
    finally:
        await admin.close()


async def wait_for_group_coordinator(
    bootstrap: str | KafkaConnection, deadline_s: float = 60.0
) -> None:
    """A fresh broker creates its offsets topic on the first group lookup; wait for that
    here, untimed, instead of inside whichever run comes first."""
    admin = AIOKafkaAdminClient(**connection(bootstrap).client_options())
    await admin.start()
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                try:
                    await admin.find_coordinator(unique("bench-probe"))
                    return
                except KafkaError:
                    await asyncio.sleep(0.1)  # poll interval; bounded by the timeout above
    finally:
        await admin.close()


def partitions(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    # A group id avoids aiokafka's group-less coordinator, whose stop() can misbehave.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=unique("bench-size"),
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = partitions(topic)
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def topic_size(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


class BenchError(Exception):
    """A run did not do what it claims (missing rows, uncommitted offsets...)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


async def check_committed_to_end(bootstrap: str, group: str, topic: str) -> None:
    ends = await end_offsets(bootstrap, topic)
    committed = await committed_offsets(bootstrap, group)
    for tp, end in ends.items():
        check(committed.get(tp) == end, f"{group}: {tp} committed {committed.get(tp)}, end {end}")
