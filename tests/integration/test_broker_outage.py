"""Events written while the broker is down arrive after it returns, in order, none missing."""

from __future__ import annotations

import asyncio

import pytest

from events.catalogue import TopicSpec
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from events.topics import apply_topics
from infra.broker import down, up
from tests.integration.harness import (
    Ping,
    applied_rows,
    assert_per_key_order,
    codec_for,
    ping_consumer,
    running,
    running_relay,
    write_pings,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_outbox_survives_broker_outage(broker_factory, new_db):
    spec = await asyncio.to_thread(broker_factory)
    topic = unique("outage")
    await apply_topics(KafkaConnection(spec.bootstrap), [TopicSpec(topic, 2, -1, (), {})])
    codec = codec_for(topic)
    producer_db, consumer_db = await new_db("producer"), await new_db("consumer")
    outbox = Outbox(codec, "producer")
    relay = OutboxRelay(
        producer_db,
        KafkaConnection(spec.bootstrap),
        config=RelayConfig(backoff_initial_s=0.2, backoff_max_s=2.0),
    )
    outbox.on_commit(relay.notify)
    name = unique("consumer")
    consumer = ping_consumer(name, topic, db=consumer_db, codec=codec, bootstrap=spec.bootstrap)
    aggregates = [unique("agg") for _ in range(3)]

    async with running_relay(relay), running(consumer):
        before = await write_pings(producer_db, outbox, aggregates, per_aggregate=10)
        await eventually(lambda: consumer.stats.applied >= len(before), what="first wave")

        await asyncio.to_thread(down, spec)
        during = [(agg, seq) for seq in range(10, 30) for agg in aggregates]
        for agg, seq in during:
            async with UnitOfWork(producer_db, outbox) as uow:
                uow.emit(Ping(aggregate_id=agg, seq=seq), key=agg)
                await uow.commit()
        assert (await relay.backlog())[0] > 0  # nothing could be published

        await asyncio.to_thread(up, spec)
        await eventually(
            lambda: consumer.stats.applied >= len(before) + len(during),
            deadline_s=120,
            what="events written during the outage",
        )

    rows = await applied_rows(consumer_db)
    assert sorted(rows) == sorted(before + during)  # none missing, none twice
    assert_per_key_order(rows)
    assert (await relay.backlog())[0] == 0
