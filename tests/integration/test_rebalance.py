"""Scaling a consumer group up and down mid-stream: nothing lost, nothing applied twice."""

from __future__ import annotations

import pytest

from events.consumer import EventConsumer
from events.kafka import KafkaConnection
from events.outbox import Outbox
from events.relay import OutboxRelay
from tests.integration.harness import (
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


async def test_members_joining_and_leaving_apply_each_event_once(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=4)
    codec = codec_for(topic)
    producer_db, service_db = await new_db("producer"), await new_db("service")
    outbox = Outbox(codec, "producer")
    relay = OutboxRelay(producer_db, KafkaConnection(kafka_bootstrap))
    outbox.on_commit(relay.notify)
    group = unique("group")
    aggregates = [unique("agg") for _ in range(8)]

    def member(tag: str) -> EventConsumer:
        # Two instances of one service: same group, same database, small batches.
        return ping_consumer(
            group,
            topic,
            db=service_db,
            codec=codec,
            bootstrap=kafka_bootstrap,
            max_batch=25,
            consumer_options={"client_id": f"{group}-{tag}"},
        )

    first, second = member("a"), member("b")
    written: list[tuple[str, int]] = []

    def applied() -> int:
        return first.stats.applied + second.stats.applied

    async with running_relay(relay), running(first):
        written += await write_pings(producer_db, outbox, aggregates, per_aggregate=25)
        await eventually(lambda: applied() >= 50, what="first member under way")
        async with running(second):
            written += await write_pings(producer_db, outbox, aggregates, 25, start=25)
            await eventually(lambda: second.assignment, what="second member assigned")
            await eventually(lambda: applied() >= 300, what="both members working")
        # second left: its partitions move back to first
        written += await write_pings(producer_db, outbox, aggregates, 25, start=50)
        await eventually(
            lambda: applied() >= len(written), deadline_s=60, what="every event applied"
        )
    rows = await applied_rows(service_db)
    assert len(rows) == len(written)
    assert sorted(rows) == sorted(set(written))
    assert_per_key_order(rows)
