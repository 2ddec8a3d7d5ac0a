"""A topic migrating from single-object encoding to the schema registry wire format without a
stop: its events in both framings, side by side (the older ones single-object, the newer ones
registry-framed, and sagas whose services moved at different times), read by a running
service and rebuilt by a replay as if they were written in one.

The readers are configured as a service that still writes single-object is
(``SCHEMA_FORMAT`` unset, ``SCHEMA_REGISTRY_URL`` naming the registry): they read both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.db import Database
from events.encoding import make_codec
from events.kafka import KafkaConnection
from events.projection_store import ProjectionStore
from events.publisher import Draft, Published, publish
from events.replay import replay
from events.schema_registry import register_catalogue
from events.settings import SchemaEncoding
from events.tables import metadata as platform_metadata
from infra.registry import RegistrySpec
from tests.integration.harness import (
    FIXTURE_SCHEMAS,
    applied_rows,
    assert_per_key_order,
    inbox_count,
    new_database,
    ping_consumer,
    running,
)
from tests.integration.test_query_kit import (
    OUTCOMES,
    Bus,
    QueryEnv,
    publish_saga,
    start_env,
    stop_env,
)
from tests.integration.test_query_replay import busy_saga, dump
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

SINGLE_OBJECT = 0xC3
REGISTRY = 0x00


async def first_bytes(bootstrap: str, topics: list[str]) -> Counter[int]:
    """The first byte of every value on ``topics`` (the framing: C3 or 00), read raw."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=unique("framings"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: Counter[int] = Counter()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:  # everything published was acknowledged before this read
                return seen
            for records in batch.values():
                seen.update((r.value or b"\xff")[0] for r in records)
    finally:
        await consumer.stop()


@pytest.fixture
async def mixed_env(
    kafka_bootstrap: str,
    database_url: Callable[[str], str],
    schema_registry: RegistrySpec,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[QueryEnv, AvroCodec]]:
    """The query service reading with a registry to resolve ids (it writes single-object),
    and a registry-format codec for the same prefixed catalogue, registered."""
    url = schema_registry.ccompat_url
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", url)  # the service's settings read it
    prefix = unique("mixed") + "."
    register_catalogue(Catalogue.load().prefixed(prefix), url)
    env = await start_env(kafka_bootstrap, database_url("query"), prefix)
    try:
        assert env.settings.schema_format == "single-object"
        registry_codec = make_codec(env.codec.catalogue, SchemaEncoding("registry", url))
        yield env, registry_codec
    finally:
        await stop_env(env)


async def test_the_query_service_and_its_replay_read_a_topic_holding_both_framings(
    mixed_env: tuple[QueryEnv, AvroCodec], database_url: Callable[[str], str]
) -> None:
    env, registry_codec = mixed_env
    single = Bus(env.bootstrap, env.codec)
    registered = Bus(env.bootstrap, registry_codec)
    before, after, midway = busy_saga(40), busy_saga(40), busy_saga(40)
    published: list[Published] = []
    published += await publish_saga(single, before)  # before the migration
    published += await publish_saga(registered, after)  # after it
    # Sagas in flight while it happened: orders and payments moved first.
    moved = {"orders", "payments"}
    published += await publish_saga(
        registered, midway, [s for s in midway.sent if s.producer in moved]
    )
    published += await publish_saga(
        single, midway, [s for s in midway.sent if s.producer not in moved]
    )

    topics = sorted({p.topic for p in published})
    framings = await first_bytes(env.bootstrap, topics)
    assert framings[SINGLE_OBJECT] > 0 and framings[REGISTRY] > 0
    assert sum(framings.values()) == len(published)
    per_topic = [await first_bytes(env.bootstrap, [t]) for t in topics]
    assert any(len(f) == 2 for f in per_topic), "no topic holds both framings"

    # The running service applies every event, whatever its framing.
    await env.caught_up(published, deadline_s=60)
    sagas = (before, after, midway)
    for saga in sagas:
        for order in saga.orders.values():
            r = await env.get(f"/orders/{order.order_id}")
            assert r.status_code == 200, r.text
            status, failed_step = OUTCOMES[order.path][:2]
            assert (r.json()["status"], r.json()["failed_step"]) == (status, failed_step)
    live = await dump(env.ctx.db, env.runner.store)
    order_events = sum(len(o.events) for saga in sagas for o in saga.orders.values())
    assert sum(live["query_timeline"].values()) == order_events  # none set aside

    # A rebuild from the topics (reader processes: the codec travels to them, its registry
    # URL with it, and each resolves the ids it meets) writes the same rows.
    db = Database(database_url("rebuilt"))
    await db.create_all(platform_metadata)
    try:
        report = await replay(
            env.runner.projection,
            db,
            env.codec,
            KafkaConnection(env.bootstrap),
            readers=2,
            drop_grace_s=0,
        )
        assert report.events == len(published)
        rebuilt = await dump(db, ProjectionStore(env.runner.projection, db), report.generation)
    finally:
        await db.dispose()
    assert rebuilt == live


async def test_an_idempotent_consumer_applies_a_topic_holding_both_framings(
    kafka_bootstrap: str,
    schema_registry: RegistrySpec,
    new_topic: Callable[..., Awaitable[str]],
    database_url: Callable[[str], str],
) -> None:
    url = schema_registry.ccompat_url
    topic = await new_topic(partitions=3)
    catalogue = Catalogue.load(FIXTURE_SCHEMAS).retarget({"Ping": topic, "Pong": f"{topic}-pong"})
    register_catalogue(catalogue, url)
    reader = make_codec(catalogue, SchemaEncoding("single-object", url))
    writer = make_codec(catalogue, SchemaEncoding("registry", url))
    kafka = KafkaConnection(kafka_bootstrap)
    keys = [unique("agg") for _ in range(6)]

    def pings(seqs: range) -> list[Draft]:
        return [
            Draft("Ping", {"aggregate_id": k, "seq": s, "note": ""}, k) for s in seqs for k in keys
        ]

    # Each key's events: single-object, then registry-framed, then single-object again (a
    # producer rolled back): the consumer keeps each key's order across the framings.
    await publish(reader, kafka, pings(range(0, 10)), producer="old")
    await publish(writer, kafka, pings(range(10, 20)), producer="new")
    await publish(reader, kafka, pings(range(20, 25)), producer="old")
    expected = 25 * len(keys)
    framings = await first_bytes(kafka_bootstrap, [topic])
    assert framings == {SINGLE_OBJECT: 15 * len(keys), REGISTRY: 10 * len(keys)}

    db: Database = await new_database(database_url("mixed"))
    consumer = ping_consumer(unique("mixed"), topic, db=db, codec=reader, bootstrap=kafka_bootstrap)
    try:
        async with running(consumer):

            async def all_applied() -> bool:
                return len(await applied_rows(db)) >= expected

            await eventually(all_applied, deadline_s=60, what="every ping to be applied")
        rows = await applied_rows(db)
        assert sorted(rows) == sorted((k, s) for s in range(25) for k in keys)
        assert_per_key_order(rows)
        assert consumer.stats.dead_lettered == 0
        assert await inbox_count(db, consumer.name) == expected
    finally:
        await db.dispose()
