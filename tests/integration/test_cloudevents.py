"""CloudEvents Kafka binary mode, with the CloudEvents SDK on the other side: it parses what
a service's relay and ``choreo publish`` sent, and a consumer applies an event that carries
only CloudEvents headers (and dead-letters one without an envelope, saying why)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary

from events.catalogue import Catalogue, dead_letter_topic
from events.cli import main as cli
from events.consumer import EventConsumer
from events.dlq import DLQ_OFFSET, DLQ_REASON
from events.envelope import Envelope, Event, headers_dict
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay
from events.routing import Router
from events.topics import apply_topics
from tests.integration.harness import Ping, codec_for, read_all, running, running_relay
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


def as_cloudevent(record: Any) -> CloudEvent:
    """The Kafka record as the CloudEvents SDK reads it (the Avro body left as bytes)."""
    message = KafkaMessage(dict(record.headers), record.key, record.value)
    return from_binary(message, data_unmarshaller=lambda body: body)


async def test_the_sdk_parses_what_a_service_relay_published(kafka_bootstrap, new_topic, new_db):
    topic = await new_topic(partitions=2)
    codec = codec_for(topic)
    db = await new_db("pinger")
    outbox = Outbox(codec, "pinger")
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap))
    outbox.on_commit(relay.notify)
    keys = [unique("agg") for _ in range(3)]
    async with running_relay(relay):
        async with UnitOfWork(db, outbox) as uow:
            sent = {
                env.event_id: env
                for env in (uow.emit(Ping(aggregate_id=k, seq=1), key=k) for k in keys)
            }
            await uow.commit()
        records = await read_all(kafka_bootstrap, topic, expected=len(keys))

    assert len(records) == len(keys)
    for record in records:
        event = as_cloudevent(record)
        env = sent[event["id"]]
        assert event["specversion"] == "1.0"
        assert event["type"] == "Ping"
        assert event["source"] == "/choreo/pinger"
        assert datetime.fromisoformat(event["time"]) == env.occurred_at
        assert event["subject"] == env.key == record.key.decode()
        assert event["datacontenttype"] == "application/avro"
        assert codec.decode(event.get_data()).payload["aggregate_id"] == env.key


async def test_the_sdk_parses_what_choreo_publish_sent(
    kafka_bootstrap, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    prefix = f"{unique('ce')}."
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    topic = prefix + "orders.requests"
    spec = Catalogue.load().prefixed(prefix).topics[topic]
    await apply_topics(KafkaConnection(kafka_bootstrap), [spec], dead_letters=False)
    order_id = str(uuid.uuid4())
    before = datetime.now(UTC) - timedelta(seconds=1)
    argv = ["publish", "OrderCancellationRequested", "--field", f"order_id={order_id}"]
    argv += ["--field", "reason=changed my mind", "--output", "json"]
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, argv)
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    shown = json.loads(out)

    (record,) = await read_all(kafka_bootstrap, topic, 1)
    event = as_cloudevent(record)
    assert event["id"] == shown["event_id"]
    assert event["type"] == "OrderCancellationRequested"
    assert event["source"] == "/choreo/choreo-cli"
    assert before <= datetime.fromisoformat(event["time"]) <= datetime.now(UTC)
    assert event["subject"] == order_id  # the key, inferred from order_id


async def test_a_consumer_applies_cloudevents_only_and_dead_letters_no_envelope(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("consumer")
    good_key, bare_key, bad_id_key = unique("ce"), unique("bare"), unique("badid")
    event_id = str(uuid.uuid4())
    foreign = CloudEvent(
        {
            "id": event_id,
            "type": "Ping",
            "source": "https://elsewhere.example/pinger",
            "time": "2026-12-06T15:04:05.5Z",
            "datacontenttype": "application/avro",
            "partitionkey": good_key,
        },
        codec.encode("Ping", {"aggregate_id": good_key, "seq": 1, "note": ""}),
    )
    good = to_binary(foreign, data_marshaller=lambda body: body)
    assert not {"event-id", "event-type", "schema-version"} & set(good.headers)
    bad_id = to_binary(
        CloudEvent(
            {**foreign.get_attributes(), "id": "ping-1", "partitionkey": bad_id_key},
            codec.encode("Ping", {"aggregate_id": bad_id_key, "seq": 2, "note": ""}),
        ),
        data_marshaller=lambda body: body,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    offsets = {}
    try:
        for name, message in {"no-envelope": None, "bad-id": bad_id, "good": good}.items():
            if message is None:
                value = codec.encode("Ping", {"aggregate_id": bare_key, "seq": 3, "note": ""})
                md = await producer.send_and_wait(topic, value, key=bare_key.encode())
            else:
                md = await producer.send_and_wait(
                    topic,
                    message.value,
                    key=message.key.encode(),
                    headers=list(message.headers.items()),
                )
            offsets[name] = md.offset
    finally:
        await producer.stop()

    seen: list[Event[Ping]] = []
    router = Router()

    @router.on(Ping)
    async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
        seen.append(event)

    name = unique("consumer")
    consumer = EventConsumer(
        name=name,
        topics=[topic],
        router=router,
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(kafka_bootstrap),
    )
    async with running(consumer):
        await eventually(
            lambda: consumer.stats.applied >= 1 and consumer.stats.dead_lettered >= 2,
            what="the CloudEvents-only event applied, the other two dead-lettered",
        )

    (applied,) = seen
    assert applied.envelope == Envelope(
        event_id,
        "Ping",
        1,  # from the body: CloudEvents has no schema version
        datetime(2026, 12, 6, 15, 4, 5, 500000, tzinfo=UTC),
        "https://elsewhere.example/pinger",
        event_id,  # the correlation: the event itself
        good_key,
    )
    assert applied.payload == Ping(aggregate_id=good_key, seq=1)

    letters = await read_all(kafka_bootstrap, dead_letter_topic(topic), expected=2)
    reasons = {
        int(headers_dict(r.headers)[DLQ_OFFSET]): headers_dict(r.headers)[DLQ_REASON]
        for r in letters
    }
    assert "missing header event-id or ce_id" in reasons[offsets["no-envelope"]]
    assert "ce_id 'ping-1' is not a UUID" in reasons[offsets["bad-id"]]
