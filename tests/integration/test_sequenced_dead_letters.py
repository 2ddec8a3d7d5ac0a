"""Sequenced dead letters: a key's events wait behind its dead-lettered event, in order."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import insert, select

from events.catalogue import dead_letter_topic
from events.codec import AvroCodec
from events.consumer import EventConsumer
from events.db import Database
from events.dlq_admin import read_dead_letters, redrive
from events.envelope import Envelope, Event, new_event_id, utcnow
from events.kafka import KafkaConnection
from events.metrics import BLOCKED_KEYS, PARKED_EVENTS
from events.outbox import Outbox, UnitOfWork
from events.parking import parked_record
from events.routing import PermanentError, Refusal, RetryPolicy, Router
from events.tables import blocked_keys, inbox, parked_events
from tests.integration.harness import Ping, applied, applied_rows, codec_for, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


class Faults:
    """Which (key, seq) the handler refuses for good: the "bug" a later fix removes."""

    def __init__(self, *refused: tuple[str, int], error: type[PermanentError] = PermanentError):
        self.refused = set(refused)
        self.error = error

    def router(self) -> Router:
        router = Router()

        @router.on(Ping)
        async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
            p = event.payload
            if (p.aggregate_id, p.seq) in self.refused:
                raise self.error(f"cannot apply {p.aggregate_id} seq {p.seq}")
            await uow.session.execute(
                insert(applied).values(
                    aggregate_id=p.aggregate_id, seq=p.seq, event_id=event.event_id
                )
            )

        return router


def consumer_for(
    name: str, topic: str, db: Database, codec: AvroCodec, bootstrap: str, faults: Faults
) -> EventConsumer:
    return EventConsumer(
        name=name,
        topics=[topic],
        router=faults.router(),
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(bootstrap),
        retry=RetryPolicy(attempts=2, initial_s=0.01, max_s=0.02),
        block_sync_interval_ms=200,
    )


async def send_pings(bootstrap: str, codec: AvroCodec, topic: str, pings: list[tuple[str, int]]):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, seq in pings:
            env = Envelope(new_event_id(), "Ping", 1, utcnow(), "test", new_event_id(), key)
            value = codec.encode("Ping", {"aggregate_id": key, "seq": seq, "note": ""})
            await producer.send_and_wait(topic, value, key=key.encode(), headers=env.to_headers())
    finally:
        await producer.stop()


async def parked_seqs(db: Database, codec: AvroCodec, consumer: str, key: str) -> list[int]:
    async with db.session() as s:
        rows = (
            (
                await s.execute(
                    select(parked_events)
                    .where(parked_events.c.consumer == consumer, parked_events.c.key == key)
                    .order_by(parked_events.c.seq)
                )
            )
            .mappings()
            .all()
        )
    return [codec.decode(parked_record(dict(r)).value or b"").payload["seq"] for r in rows]


async def blocks_of(db: Database, consumer: str) -> list[dict[str, Any]]:
    async with db.session() as s:
        rows = await s.execute(select(blocked_keys).where(blocked_keys.c.consumer == consumer))
        return [dict(r) for r in rows.mappings().all()]


async def outcomes(db: Database, consumer: str) -> dict[str, int]:
    async with db.session() as s:
        rows = (await s.execute(select(inbox.c.outcome).where(inbox.c.consumer == consumer))).all()
    counts: dict[str, int] = {}
    for (outcome,) in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def the_letter(bootstrap: str, topic: str, expected: int = 1) -> Any:
    letters = await eventually(
        lambda: _letters(bootstrap, topic, expected), what=f"{expected} letter(s)"
    )
    return letters[-1]


async def _letters(bootstrap: str, topic: str, expected: int) -> Any:
    found = await read_dead_letters(KafkaConnection(bootstrap), [dead_letter_topic(topic)])
    return found if len(found) >= expected else None


async def test_a_keys_later_events_wait_behind_its_dead_letter_and_follow_it_in_order(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=2)
    codec = codec_for(topic)
    db = await new_db("seq")
    key, other = unique("order"), unique("other")
    faults = Faults((key, 0))
    name = unique("consumer")
    consumer = consumer_for(name, topic, db, codec, kafka_bootstrap, faults)
    await send_pings(kafka_bootstrap, codec, topic, [(key, 0), (other, 0), (key, 1), (key, 2)])
    await send_pings(kafka_bootstrap, codec, topic, [(other, 1)])
    async with running(consumer):
        await eventually(
            lambda: consumer.stats.dead_lettered == 1 and consumer.stats.parked == 2,
            what="first event dead-lettered, the next two parked",
        )
        await eventually(lambda: _count(applied_rows(db), 2), what="the other key's events applied")
        assert await applied_rows(db) == [(other, 0), (other, 1)]  # none of the key's
        assert await parked_seqs(db, codec, name, key) == [1, 2]
        (block,) = await blocks_of(db, name)
        assert block["key"] == key and "cannot apply" in block["reason"]
        assert (await outcomes(db, name)).get("parked") == 2

        faults.refused.clear()  # the fix is deployed; the letter is re-driven
        letter = await the_letter(kafka_bootstrap, topic)
        assert block["event_id"] == letter.summary()["event_id"]
        await redrive(KafkaConnection(kafka_bootstrap), [letter], codec)
        await eventually(lambda: _count(applied_rows(db), 5), what="the key's three events")
        await send_pings(kafka_bootstrap, codec, topic, [(key, 3)])
        await eventually(lambda: _count(applied_rows(db), 6), what="a later event applies")

    rows = await applied_rows(db)
    assert [seq for k, seq in rows if k == key] == [0, 1, 2, 3]
    assert await parked_seqs(db, codec, name, key) == []
    assert await blocks_of(db, name) == []
    assert await outcomes(db, name) == {"applied": 6}


async def test_a_blocked_key_stays_blocked_across_a_restart(kafka_bootstrap, new_topic, new_db):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("seq")
    key = unique("order")
    faults = Faults((key, 0))
    name = unique("consumer")
    await send_pings(kafka_bootstrap, codec, topic, [(key, 0), (key, 1)])
    first = consumer_for(name, topic, db, codec, kafka_bootstrap, faults)
    async with running(first):
        await eventually(lambda: first.stats.parked == 1, what="seq 1 parked")

    other = unique("other")
    await send_pings(kafka_bootstrap, codec, topic, [(key, 2), (other, 0)])
    for gauge in (PARKED_EVENTS, BLOCKED_KEYS):  # as a new process starts them
        gauge.labels(name).set(0)
    second = consumer_for(name, topic, db, codec, kafka_bootstrap, faults)
    async with running(second):
        await eventually(lambda: _count(applied_rows(db), 1), what="the other key applied")
        await eventually(lambda: second.stats.parked == 1, what="seq 2 parked after restart")
        assert await applied_rows(db) == [(other, 0)]
        assert await parked_seqs(db, codec, name, key) == [1, 2]
        # The gauges come from the database: the new process counts what the old one parked.
        assert REGISTRY.get_sample_value("choreo_parked_events", {"consumer": name}) == 2
        assert REGISTRY.get_sample_value("choreo_blocked_keys", {"consumer": name}) == 1

        faults.refused.clear()
        await redrive(
            KafkaConnection(kafka_bootstrap), [await the_letter(kafka_bootstrap, topic)], codec
        )
        await eventually(lambda: _count(applied_rows(db), 4), what="the key's three events")
    assert [seq for k, seq in await applied_rows(db) if k == key] == [0, 1, 2]
    assert await blocks_of(db, name) == []


async def test_a_parked_event_that_fails_for_good_blocks_the_key_in_its_turn(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("seq")
    key = unique("order")
    faults = Faults((key, 0), (key, 2))
    name = unique("consumer")
    consumer = consumer_for(name, topic, db, codec, kafka_bootstrap, faults)
    await send_pings(kafka_bootstrap, codec, topic, [(key, seq) for seq in range(4)])
    async with running(consumer):
        await eventually(lambda: consumer.stats.parked == 3, what="seq 1-3 parked")
        faults.refused.discard((key, 0))  # a fix for the first only
        await redrive(
            KafkaConnection(kafka_bootstrap), [await the_letter(kafka_bootstrap, topic)], codec
        )
        await eventually(lambda: consumer.stats.dead_lettered == 2, what="seq 2 dead-lettered")
        await eventually(lambda: _count(applied_rows(db), 2), what="seq 0 and 1 applied")
        assert [seq for _, seq in await applied_rows(db)] == [0, 1]
        assert await parked_seqs(db, codec, name, key) == [3]
        (block,) = await blocks_of(db, name)
        second = await the_letter(kafka_bootstrap, topic, expected=2)
        assert block["event_id"] == second.summary()["event_id"]

        faults.refused.clear()
        await redrive(KafkaConnection(kafka_bootstrap), [second], codec)
        await eventually(lambda: _count(applied_rows(db), 4), what="seq 2 and 3 applied")
    assert [seq for _, seq in await applied_rows(db)] == [0, 1, 2, 3]
    assert await blocks_of(db, name) == []


async def _count(rows: Any, n: int) -> bool:
    return len(await rows) >= n


async def test_a_refusal_is_dead_lettered_without_blocking_its_key(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("seq")
    key = unique("customer")
    name = unique("consumer")
    consumer = consumer_for(
        name, topic, db, codec, kafka_bootstrap, Faults((key, 0), error=Refusal)
    )
    await send_pings(kafka_bootstrap, codec, topic, [(key, 0), (key, 1)])
    async with running(consumer):
        await eventually(lambda: _count(applied_rows(db), 1), what="seq 1 applied")
    assert consumer.stats.dead_lettered == 1 and consumer.stats.parked == 0
    assert await applied_rows(db) == [(key, 1)]
    assert await blocks_of(db, name) == []


async def test_an_undecodable_record_blocks_its_key_and_the_events_before_it_still_apply(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("seq")
    key = unique("order")
    name = unique("consumer")
    consumer = consumer_for(name, topic, db, codec, kafka_bootstrap, Faults())
    await send_pings(kafka_bootstrap, codec, topic, [(key, 0)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not avro", key=key.encode())
    finally:
        await producer.stop()
    await send_pings(kafka_bootstrap, codec, topic, [(key, 2)])
    async with running(consumer):  # all three in one batch
        await eventually(lambda: consumer.stats.parked == 1, what="seq 2 parked")
    assert consumer.stats.dead_lettered == 1
    assert await applied_rows(db) == [(key, 0)]
    assert await parked_seqs(db, codec, name, key) == [2]
    (block,) = await blocks_of(db, name)
    assert block["offset"] == 1
