"""Poison messages go to ``<topic>.dlq`` with the reason; the consumer moves on."""

from __future__ import annotations

import os

import pytest
from aiokafka import AIOKafkaProducer

from events.catalogue import dead_letter_topic
from events.consumer import EventConsumer
from events.dlq import DLQ_CONSUMER, DLQ_OFFSET, DLQ_REASON, DLQ_TOPIC
from events.envelope import Envelope, headers_dict, new_event_id, utcnow
from events.kafka import KafkaConnection
from events.outbox import Outbox
from events.routing import RetryPolicy
from tests.integration.harness import applied_rows, codec_for, ping_router, read_all, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


def envelope(key: str) -> list[tuple[str, bytes]]:
    env = Envelope(new_event_id(), "Ping", 1, utcnow(), "test", new_event_id(), key)
    return env.to_headers()


async def test_poison_messages_are_dead_lettered_with_reason_and_later_events_apply(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("consumer")
    key = unique("agg")
    good = codec.encode("Ping", {"aggregate_id": key, "seq": 0, "note": ""})
    poison = {
        "random": os.urandom(64),
        "truncated": good[:-3],
        "unknown": b"\xc3\x01" + os.urandom(8) + good[10:],
        "failing": codec.encode("Ping", {"aggregate_id": key, "seq": 1, "note": "fail"}),
        "permanent": codec.encode("Ping", {"aggregate_id": key, "seq": 2, "note": "permanent"}),
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        offsets = {}
        for name, value in poison.items():
            md = await producer.send_and_wait(topic, value, key=key.encode(), headers=envelope(key))
            offsets[name] = md.offset
        for seq in range(3, 8):
            value = codec.encode("Ping", {"aggregate_id": key, "seq": seq, "note": ""})
            await producer.send_and_wait(topic, value, key=key.encode(), headers=envelope(key))
        missing_headers = codec.encode("Ping", {"aggregate_id": key, "seq": 99, "note": ""})
        md = await producer.send_and_wait(topic, missing_headers, key=key.encode())
        offsets["no-envelope"] = md.offset
    finally:
        await producer.stop()

    name = unique("consumer")
    consumer = EventConsumer(
        name=name,
        topics=[topic],
        router=ping_router(),
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(kafka_bootstrap),
        retry=RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05),
        # Every message here shares one key: unsequenced, so the later ones apply past the
        # poison (test_sequenced_dead_letters covers parking them behind it).
        sequenced=False,
    )
    async with running(consumer):
        await eventually(
            lambda: consumer.stats.applied >= 5 and consumer.stats.dead_lettered >= 6,
            what="good events applied and poison dead-lettered",
        )

    assert await applied_rows(db) == [(key, seq) for seq in range(3, 8)]
    assert consumer.stats.retries == 2  # "failing" was tried 3 times

    letters = await read_all(kafka_bootstrap, dead_letter_topic(topic), expected=6)
    by_offset = {int(headers_dict(r.headers)[DLQ_OFFSET]): r for r in letters}
    reasons = {
        name: headers_dict(by_offset[off].headers)[DLQ_REASON] for name, off in offsets.items()
    }
    assert "bad magic" in reasons["random"] or "shorter" in reasons["random"]
    assert "corrupt Ping v1 body" in reasons["truncated"]
    assert "unknown schema fingerprint" in reasons["unknown"]
    assert "handler refuses seq 1" in reasons["failing"]
    assert "can never apply" in reasons["permanent"]
    assert "missing header event-id" in reasons["no-envelope"]
    for record in letters:
        h = headers_dict(record.headers)
        assert h[DLQ_TOPIC] == topic and h[DLQ_CONSUMER] == name
        assert record.key == key.encode()
    assert by_offset[offsets["random"]].value == poison["random"]  # original bytes kept
