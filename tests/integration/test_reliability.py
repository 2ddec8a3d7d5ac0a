"""The reliability contract against the real broker: crashes re-deliver, nothing applies twice."""

from __future__ import annotations

import pytest

from events.kafka import KafkaConnection
from events.outbox import Outbox
from events.relay import OutboxRelay
from tests.integration.harness import (
    applied_rows,
    assert_per_key_order,
    codec_for,
    inbox_count,
    ping_consumer,
    running,
    topic_size,
    write_pings,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


class Crash(Exception):
    """Stands for a process dying at the worst moment."""


async def test_relay_crash_after_publish_republishes_and_consumer_applies_once(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=3)
    codec = codec_for(topic)
    producer_db, consumer_db = await new_db("producer"), await new_db("consumer")
    outbox = Outbox(codec, "producer")
    aggregates = [unique("agg") for _ in range(5)]
    written = await write_pings(producer_db, outbox, aggregates, per_aggregate=20)

    async def die(rows):
        raise Crash(f"killed after {len(rows)} acks")

    crashing = OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap), after_publish=die)
    with pytest.raises(Crash):
        await crashing.publish_batch()
    await crashing.close()
    assert await topic_size(kafka_bootstrap, topic) == len(written)  # all were acked...
    count, _ = await crashing.backlog()
    assert count == len(written)  # ...but none marked sent

    relay = OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap))
    assert await relay.drain() == len(written)
    await relay.close()
    assert await topic_size(kafka_bootstrap, topic) == 2 * len(written)
    assert (await relay.backlog())[0] == 0

    name = unique("consumer")
    consumer = ping_consumer(name, topic, db=consumer_db, codec=codec, bootstrap=kafka_bootstrap)
    async with running(consumer):
        await eventually(
            lambda: consumer.stats.applied + consumer.stats.duplicates >= 2 * len(written),
            what="both copies consumed",
        )
    rows = await applied_rows(consumer_db)
    assert sorted(rows) == sorted(written)
    assert consumer.stats.duplicates == len(written)
    assert await inbox_count(consumer_db, name) == len(written)
    assert_per_key_order(rows)


async def test_consumer_crash_before_offset_commit_rereads_and_applies_once(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=2)
    codec = codec_for(topic)
    producer_db, consumer_db = await new_db("producer"), await new_db("consumer")
    outbox = Outbox(codec, "producer")
    written = await write_pings(producer_db, outbox, [unique("agg") for _ in range(4)], 50)
    relay = OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap))
    await relay.drain()
    await relay.close()

    group = unique("group")

    async def die() -> None:
        raise Crash("killed between database commit and offset commit")

    first = ping_consumer(
        group,
        topic,
        db=consumer_db,
        codec=codec,
        bootstrap=kafka_bootstrap,
        max_batch=60,
        after_db_commit=die,
    )
    async with running(first) as run:
        await eventually(lambda: run.task.done(), what="first consumer to crash")
    assert isinstance(run.task.exception(), Crash)
    applied_before = first.stats.applied
    assert 0 < applied_before < len(written)

    second = ping_consumer(group, topic, db=consumer_db, codec=codec, bootstrap=kafka_bootstrap)
    async with running(second):
        await eventually(
            lambda: second.stats.applied + applied_before >= len(written), what="the rest applied"
        )
    rows = await applied_rows(consumer_db)
    assert sorted(rows) == sorted(written)
    assert second.stats.duplicates == applied_before  # re-read, recognised, skipped
    assert_per_key_order(rows)


async def test_handler_emits_in_same_transaction_and_relay_wakes_on_commit(
    kafka_bootstrap, new_topic, new_db
):
    """Ping handled -> Pong written to the outbox in the same transaction -> relay publishes."""
    pings, pongs = await new_topic(partitions=2), await new_topic(partitions=2)
    codec = codec_for(pings, pongs)
    producer_db, service_db = await new_db("producer"), await new_db("service")
    written = await write_pings(producer_db, Outbox(codec, "producer"), [unique("a")], 30)
    relay = OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap))
    await relay.drain()
    await relay.close()

    name = unique("svc")
    service_outbox = Outbox(codec, name)
    # Idle poll far longer than the test's deadline: only the commit wake-up can deliver.
    from events.relay import RelayConfig

    service_relay = OutboxRelay(
        service_db, KafkaConnection(kafka_bootstrap), config=RelayConfig(idle_poll_s=600)
    )
    service_outbox.on_commit(service_relay.notify)
    consumer = ping_consumer(
        name,
        pings,
        db=service_db,
        codec=codec,
        bootstrap=kafka_bootstrap,
        emit_pong=True,
        outbox=service_outbox,
    )
    from tests.integration.harness import running_relay

    async with running_relay(service_relay), running(consumer):
        await eventually(
            lambda: service_relay.published >= len(written), deadline_s=20, what="pongs published"
        )
    assert await topic_size(kafka_bootstrap, pongs) == len(written)
