"""The query service never dies on one event (issue 14, defect 2).

Two credited deposits of 2^63-1 cents for one customer: the second would overflow the
customer's figures. Its batch is bisected, the event goes to ``payments.events.dlq`` with
the reason, the rest of the batch is applied, the service keeps answering, and a restart
neither applies it again nor forgets that it (and an undecodable message) were skipped.
A projection whose database fails reports not ready with the reason until it recovers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer

from events.envelope import H_EVENT_ID, Envelope, utcnow
from events.kafka import KafkaConnection
from events.projection_store import ProjectionStore
from events.replay import replay
from services.query.tables import CUSTOMERS
from tests.integration.harness import read_all, topic_size
from tests.integration.test_query_kit import (
    QueryEnv,
    Saga,
    publish_saga,
    start_env,
    stop_env,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

MAX = 2**63 - 1


async def send_garbage(env: QueryEnv, topic: str, key: str) -> None:
    """Bytes no contract reads, with a well-formed envelope."""
    env_headers = Envelope(
        event_id=str(uuid.uuid4()),
        event_type="FundsCredited",
        schema_version=1,
        occurred_at=utcnow(),
        producer="test",
        correlation_id=str(uuid.uuid4()),
        key=key,
    ).to_headers()
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            env.prefix + topic, b"not avro", key=key.encode(), headers=env_headers
        )
    finally:
        await producer.stop()


async def projection(env: QueryEnv) -> dict[str, object]:
    r = await env.get("/projections")
    assert r.status_code == 200, r.text
    state: dict[str, object] = r.json()[0]
    return state


async def test_an_overflowing_event_is_dead_lettered_and_the_service_stays_up_and_restarts(
    kafka_bootstrap: str, database_url: Callable[[str], str]
) -> None:
    url = database_url("query")
    env = await start_env(kafka_bootstrap, url)
    dlq = env.prefix + "payments.events.dlq"
    try:
        saga = Saga()
        ada, bob = saga.customer("ada"), saga.customer("bob")
        saga.deposit(ada, MAX)
        poison = saga.deposit(ada, MAX)  # ada's figures would pass 2^63-1
        saga.deposit(bob, 500)
        saga.deposit(ada, 0)  # behind the poison on its partition: still applied
        published = await publish_saga(env, saga)
        await send_garbage(env, "payments.events", bob)
        await env.caught_up(published)

        assert not env.task.done(), "the projection stopped"
        r = await env.get(f"/customers/{ada}")
        assert r.status_code == 200 and r.json()["deposited_cents"] == MAX
        assert (await env.get(f"/customers/{bob}")).json()["deposited_cents"] == 500

        [record] = await read_all(kafka_bootstrap, dlq, 1)
        headers = dict(record.headers)
        assert headers["dlq-consumer"] == b"projection-query"
        assert b"deposited would be" in headers["dlq-reason"]
        assert headers[H_EVENT_ID].decode() == poison.event_id

        await eventually(
            lambda: env.runner.undecodable == 1, what="the undecodable message counted"
        )
        state = await projection(env)
        assert state["dead_lettered"] == 1 and state["undecodable"] == 1
        assert state["advancing"] is True and state["last_error"] is None
        ready = await env.http.get("/ready")
        assert ready.status_code == 200, ready.text
        metrics = (await env.http.get("/metrics")).text
        assert 'choreo_projection_dead_lettered{projection="query"} 1.0' in metrics
    finally:
        await stop_env(env)

    # A restart starts past the poison, remembers what was skipped and sends nothing again.
    env = await start_env(kafka_bootstrap, url, prefix=env.prefix)
    try:
        state = await projection(env)
        assert state["dead_lettered"] == 1 and state["undecodable"] == 1
        more = Saga(run=saga.run)
        published = await publish_saga(env, more, [more.deposit(bob, 250)])
        await env.caught_up(published)
        assert (await env.get(f"/customers/{bob}")).json()["deposited_cents"] == 750
        assert (await env.get(f"/customers/{ada}")).json()["deposited_cents"] == MAX
        assert await topic_size(kafka_bootstrap, dlq) == 1
        assert (await env.http.get("/ready")).status_code == 200
    finally:
        await stop_env(env)


async def test_a_projection_that_cannot_write_is_not_ready_and_says_why_until_it_recovers(
    kafka_bootstrap: str, database_url: Callable[[str], str]
) -> None:
    env = await start_env(kafka_bootstrap, database_url("query"))
    try:
        store: ProjectionStore = env.runner.store
        gen = store.generation(env.runner.generation)
        async with store.db.engine.begin() as conn:
            await conn.run_sync(gen[CUSTOMERS].drop)  # the database, not an event, fails
        saga = Saga()
        cust = saga.customer("ada")
        published = await publish_saga(env, saga, [saga.deposit(cust, 700)])

        async def not_ready() -> bool:
            r = await env.http.get("/ready")
            checks = r.json()["checks"]
            return r.status_code == 503 and checks["advancing"] is False

        await eventually(not_ready, what="/ready to say the projection cannot advance")
        body = (await env.http.get("/ready")).json()
        checks = body["checks"]
        assert "customers" in checks["last_error"] and checks["stalled_since"]
        assert any("cannot advance" in r and "customers" in r for r in body["reasons"])
        state = await projection(env)
        assert state["advancing"] is False and state["dead_lettered"] == 0

        await store.create_tables(gen.number)  # the database is fixed: the runner goes on
        await env.caught_up(published)
        assert (await env.get(f"/customers/{cust}")).json()["deposited_cents"] == 700
        await eventually(
            lambda: env.runner.last_error is None, what="the runner to clear its error"
        )
        assert (await env.http.get("/ready")).status_code == 200
        assert await topic_size(kafka_bootstrap, env.prefix + "payments.events.dlq") == 0
    finally:
        await stop_env(env)


@pytest.mark.parametrize("readers", [0, 2], ids=["in-process", "reader-processes"])
async def test_a_replay_skips_the_event_the_live_runner_dead_lettered(
    kafka_bootstrap: str, database_url: Callable[[str], str], readers: int
) -> None:
    env = await start_env(kafka_bootstrap, database_url("query"))
    try:
        saga = Saga()
        ada, bob = saga.customer("ada"), saga.customer("bob")
        saga.deposit(ada, MAX)
        saga.deposit(ada, MAX)  # dead-lettered live; a replay must not die on it either
        saga.deposit(bob, 500)
        await env.caught_up(await publish_saga(env, saga))
        assert env.runner.dead_lettered == 1

        report = await replay(
            env.runner.projection,
            env.ctx.db,
            env.codec,
            KafkaConnection(env.bootstrap),
            readers=readers,
            drop_grace_s=0,
        )
        assert report.switched and report.skipped == 1
        # (Reader processes give up on the failing batch: the rebuild is read again here.)
        await eventually(
            lambda: env.runner.generation == report.generation, what="the runner to follow"
        )
        state = await projection(env)
        assert state["dead_lettered"] == 1  # the new generation's own count
        assert (await env.get(f"/customers/{ada}")).json()["deposited_cents"] == MAX
        assert (await env.get(f"/customers/{bob}")).json()["deposited_cents"] == 500
        assert await topic_size(kafka_bootstrap, env.prefix + "payments.events.dlq") == 1
    finally:
        await stop_env(env)
