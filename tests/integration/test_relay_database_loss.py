"""Losing the database connection in the middle of a batch (PostgreSQL terminates it, as
a restart or failover would) is the database's fault, not the events': the outbox relay
retries and publishes every row (those published but not yet marked, once more); the
idempotent consumer retries the batch and dead-letters nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import text

from events.consumer import EventConsumer
from events.db import Database
from events.envelope import Event
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from events.routing import RetryPolicy, Router
from tests.integration.harness import (
    Ping,
    applied,
    applied_rows,
    codec_for,
    read_all,
    running,
    running_relay,
    service_outbox_on_postgres,
    topic_size,
    write_pings,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

_TERMINATE = text("SELECT pg_terminate_backend(CAST(:pid AS integer))")


async def test_a_relay_whose_connection_is_cut_mid_batch_still_publishes_every_row(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    topic, codec, db, outbox = await service_outbox_on_postgres(
        new_topic, new_db, db_backend, "cutting a connection needs a database server"
    )
    admin = Database(db.url)  # a pool of its own: the connection that cuts the relay's
    written = await write_pings(db, outbox, [unique("agg") for _ in range(4)], 10)
    cut: list[bool] = []

    async def cut_the_relays_connection(rows: Sequence[object]) -> None:
        # The rows are acknowledged by Kafka, not yet marked sent: the connection that holds
        # the relay's lease (and runs its selects and marks) is idle, waiting for this hook.
        if cut or not rows:
            return
        async with admin.session() as s:
            result = await s.execute(
                text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                )
            )
            cut.extend(result.scalars().all())

    relay = OutboxRelay(
        db,
        KafkaConnection(kafka_bootstrap),
        config=RelayConfig(batch_size=10, idle_poll_s=0.05, backoff_initial_s=0.05),
        after_publish=cut_the_relays_connection,
    )
    try:
        async with running_relay(relay) as task:

            async def nothing_unsent() -> bool:
                return (await relay.backlog())[0] == 0

            await eventually(lambda: relay.failures > 0 or task.done(), what="the cut to bite")
            assert not task.done(), "the relay stopped when its connection was cut"
            assert cut == [True]
            await eventually(nothing_unsent, deadline_s=30, what="every row marked sent")
    finally:
        await admin.dispose()
    records = await read_all(
        kafka_bootstrap, topic, expected=await topic_size(kafka_bootstrap, topic)
    )
    published = [codec.decode(r.value).payload for r in records]
    assert {(p["aggregate_id"], p["seq"]) for p in published} == set(written)
    assert len(published) in (len(written), len(written) + 10)  # the cut batch, once more


async def test_a_consumer_whose_connection_is_cut_again_and_again_dead_letters_nothing(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    if db_backend != "postgres":
        pytest.skip("cutting a connection needs a database server (SQLite has none)")
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    producer_db, db = await new_db("producer"), await new_db("consumer")
    admin = Database(db.url)
    retry = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)
    cuts: list[bool] = []
    router = Router()

    @router.on(Ping)
    async def cut_then_apply(uow: UnitOfWork, event: Event[Ping]) -> None:
        # More cuts than the retry policy's attempts: were a cut counted as the event's
        # failure, the event would be dead-lettered.
        if len(cuts) <= retry.attempts:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with admin.session() as s:
                cuts.append(bool((await s.execute(_TERMINATE, {"pid": pid})).scalar_one()))
        await uow.session.execute(
            applied.insert().values(
                aggregate_id=event.payload.aggregate_id,
                seq=event.payload.seq,
                event_id=event.event_id,
            )
        )

    written = await write_pings(producer_db, Outbox(codec, "producer"), [unique("agg")], 5)
    await OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap)).drain()
    consumer = EventConsumer(
        name=unique("group"),
        topics=[topic],
        router=router,
        db=db,
        codec=codec,
        outbox=Outbox(codec, "consumer"),
        kafka=KafkaConnection(kafka_bootstrap),
        retry=retry,
    )
    try:
        async with running(consumer):
            await eventually(
                lambda: consumer.stats.applied >= len(written) or consumer.stats.dead_lettered,
                deadline_s=60,
                what="every ping applied (or one dead-lettered)",
            )
    finally:
        await admin.dispose()
    assert cuts == [True] * (retry.attempts + 1)
    assert consumer.stats.dead_lettered == 0
    assert await applied_rows(db) == written
