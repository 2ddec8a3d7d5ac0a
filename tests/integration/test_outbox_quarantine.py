"""Outbox rows Kafka refuses for good are quarantined and the rows behind them flow;
`choreo outbox` re-queues or drops them; an event too large is refused when emitted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY
from sqlalchemy import select

from events.catalogue import TopicSpec
from events.cli.main import main
from events.consumer import EventConsumer
from events.envelope import Event
from events.kafka import KafkaConnection
from events.outbox import EventTooLarge, Outbox, UnitOfWork
from events.outbox_admin import list_rows
from events.relay import OutboxRelay, RelayConfig
from events.routing import Router
from events.tables import outbox, outbox_quarantine
from events.topics import apply_topics
from tests.integration.harness import (
    Ping,
    codec_for,
    read_all,
    running,
    running_relay,
    topic_size,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

LIMIT = 10_240  # the test topics' max.message.bytes: a 20 KB ping is refused
FAST = RelayConfig(batch_size=100, idle_poll_s=0.05, backoff_initial_s=0.05, gauge_every_s=0.05)


async def small_topic(bootstrap: str, limit: int = LIMIT) -> str:
    name = unique("small")
    spec = TopicSpec(name, 3, -1, (), {"max.message.bytes": str(limit)})
    await apply_topics(KafkaConnection(bootstrap), [spec], dead_letters=False)
    return name


async def set_limit(bootstrap: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def emit(db, box: Outbox, pings: Sequence[Ping]) -> None:
    async with UnitOfWork(db, box) as uow:
        for p in pings:
            uow.emit(p, key=p.aggregate_id)
        await uow.commit()


async def published(bootstrap: str, topic: str, codec) -> list[tuple[str, int, int]]:
    """(key, seq, note length) of every record on the topic, in partition order."""
    records = await read_all(bootstrap, topic, expected=await topic_size(bootstrap, topic))
    out = []
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        p = codec.decode(r.value).payload
        out.append((p["aggregate_id"], p["seq"], len(p["note"])))
    return out


def per_key(rows: list[tuple[str, int, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, seq, _ in rows:
        out.setdefault(key, []).append(seq)
    return out


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)  # the CLI runs its own event loop


async def test_a_row_too_large_for_its_topic_is_quarantined_and_the_rows_behind_it_flow(
    kafka_bootstrap, new_db, monkeypatch, capsys, tmp_path, caplog
):
    topic = await small_topic(kafka_bootstrap)
    codec = codec_for(topic)
    db = await new_db("orders")
    box = Outbox(codec, "orders")
    a, b, c = unique("a"), unique("b"), unique("c")
    big = "x" * 2 * LIMIT
    await emit(
        db,
        box,
        [
            Ping(aggregate_id=a, seq=0),
            Ping(aggregate_id=b, seq=0),
            Ping(aggregate_id=a, seq=1, note=big),  # the poison, in a batch with the others
            Ping(aggregate_id=a, seq=2),
            Ping(aggregate_id=b, seq=1),
            Ping(aggregate_id=c, seq=0, note=big),  # a second poison, to drop
            Ping(aggregate_id=c, seq=1),
        ],
    )
    labels = {"event_type": "Ping", "error_type": "MessageSizeTooLargeError"}
    counted = sample("choreo_outbox_quarantined_total", **labels)
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=FAST)
    async with running_relay(relay) as task:
        await eventually(lambda: relay.quarantined == 2, what="both poison rows quarantined")
        await eventually(lambda: relay.published == 5, what="the rows behind them published")
        assert not task.done(), "the relay stopped"
        assert sample("choreo_outbox_quarantined_total", **labels) == counted + 2
        await eventually(
            lambda: sample("choreo_outbox_quarantine_rows") == 2 and relay.waiting == 0,
            what="the quarantine gauge, read from the database",
        )
        assert sample("choreo_outbox_backlog") == 0
        assert per_key(await published(kafka_bootstrap, topic, codec)) == {
            a: [0, 2],
            b: [0, 1],
            c: [1],
        }
        async with db.session() as s:
            moved = (await s.execute(select(outbox_quarantine))).mappings().all()
            left = set((await s.execute(select(outbox.c.event_id))).scalars())
        assert not left & {q["event_id"] for q in moved}, "moved, not copied"
        assert [(q["key"], q["error_type"]) for q in moved] == [
            (a, "MessageSizeTooLargeError"),
            (c, "MessageSizeTooLargeError"),
        ]
        assert all(q["reason"] and q["quarantined_at"] and q["payload"] for q in moved)
        logged = [
            r.getMessage()
            for r in caplog.records
            if r.name == "events.relay" and r.levelno == logging.ERROR
        ]
        assert len(logged) == 2, "one error per quarantined row"
        for q, line in zip(moved, logged, strict=True):
            assert q["event_id"] in line and q["key"] in line and "MessageSizeTooLarge" in line

        # The operator's view: `choreo outbox` over the services' databases.
        monkeypatch.setenv("VAR_DIR", str(tmp_path))
        monkeypatch.setenv("ORDERS_DATABASE_URL", db.url)
        capsys.readouterr()
        assert await cli(["outbox", "list", "--output", "json"]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(x["key"], x["error"]) for x in listed] == [
            (a, "MessageSizeTooLargeError"),
            (c, "MessageSizeTooLargeError"),
        ]
        first, second = (x["id"] for x in listed)
        assert await cli(["outbox", "show", first]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["id"] == first and shown["key"] == a
        assert "MessageSizeTooLarge" in shown["reason"]
        assert shown["size"] > 2 * LIMIT and shown["event_type"] == "Ping"
        assert await cli(["outbox", "show", first, second, "--output", "json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(line)["id"] for line in lines] == [first, second]
        assert json.loads(lines[0]) == shown

        assert await cli(["outbox", "drop", second]) == 0
        assert "dropped 1 row" in capsys.readouterr().out
        await set_limit(kafka_bootstrap, topic, 1_000_000)  # the fix: a larger limit
        assert await cli(["outbox", "retry", first]) == 0
        assert "re-queued" in capsys.readouterr().out
        await eventually(lambda: relay.published == 6, what="the re-queued row published")
        assert await list_rows(db, "orders") == []

        for argv, error in (
            (["outbox", "retry", first], "no such quarantined row"),
            (["outbox", "drop", "orders:x"], "not a quarantined row id"),
            (["outbox", "show", "nosuch:1"], "no database for service 'nosuch'"),
        ):
            assert await cli(argv) == 1
            assert error in capsys.readouterr().err
    rows = await published(kafka_bootstrap, topic, codec)
    assert per_key(rows) == {a: [0, 2, 1], b: [0, 1], c: [1]}  # re-queued: after its key's
    assert (a, 1, len(big)) in rows


async def test_a_row_for_a_topic_the_catalogue_does_not_know_is_quarantined(
    kafka_bootstrap, new_topic, new_db
):
    topic, gone = await new_topic(partitions=1), unique("gone")
    db = await new_db("svc")
    await emit(db, Outbox(codec_for(gone), "svc"), [Ping(aggregate_id="k", seq=0)])
    await emit(db, Outbox(codec_for(topic), "svc"), [Ping(aggregate_id="k", seq=1)])
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=FAST, known_topics={topic})
    assert await relay.drain() == 2
    assert (relay.quarantined, relay.published) == (1, 1)
    (row,) = await list_rows(db, "svc")
    assert (row.topic, row.error_type) == (gone, "TopicNotInCatalogue")
    assert gone in row.reason


async def test_a_batch_too_large_for_the_topic_is_published_row_by_row_not_quarantined(
    kafka_bootstrap, new_db
):
    # Each row fits the topic's limit, but not four of them in one batch: the relay learns
    # by sending the first alone that no row is at fault.
    topic = await small_topic(kafka_bootstrap)
    codec = codec_for(topic)
    db = await new_db("svc")
    key = unique("k")
    note = "y" * (LIMIT // 3)
    await emit(
        db, Outbox(codec, "svc"), [Ping(aggregate_id=key, seq=s, note=note) for s in range(4)]
    )
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=FAST)
    assert await relay.drain() == 4
    assert relay.quarantined == 0
    assert per_key(await published(kafka_bootstrap, topic, codec)) == {key: [0, 1, 2, 3]}


async def test_emitting_an_event_over_the_limit_raises_and_its_cause_is_dead_lettered(
    kafka_bootstrap, new_topic, new_db
):
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("consumer")
    box = Outbox(codec_for(unique("out")), "echo", max_event_bytes=2_000)

    async with UnitOfWork(db, box) as uow:
        with pytest.raises(EventTooLarge, match=r"Ping event of \d+ bytes exceeds .* 2000"):
            uow.emit(Ping(aggregate_id="k", seq=0, note="z" * 2_000), key="k")
        assert uow.pending_events == 0

    router = Router()
    echoed: list[int] = []

    @router.on(Ping)
    async def echo(uow: UnitOfWork, event: Event[Ping]) -> None:
        # The echo repeats the note ten times: a long note makes an event over the limit.
        uow.emit(
            Ping(aggregate_id=event.payload.aggregate_id, seq=0, note=event.payload.note * 10),
            key=event.payload.aggregate_id,
        )
        echoed.append(event.payload.seq)

    name = unique("echo")
    consumer = EventConsumer(
        name=name,
        topics=[topic],
        router=router,
        db=db,
        codec=codec,
        outbox=box,
        kafka=KafkaConnection(kafka_bootstrap),
    )
    await emit(
        db,
        Outbox(codec, "producer"),
        [Ping(aggregate_id="k", seq=1, note="ok"), Ping(aggregate_id="j", seq=2, note="q" * 500)],
    )
    await OutboxRelay(db, KafkaConnection(kafka_bootstrap)).drain()
    async with running(consumer):
        await eventually(lambda: consumer.stats.dead_lettered == 1, what="the cause dead-lettered")
        await eventually(lambda: 1 in echoed, what="the small one echoed")
    async with db.session() as s:
        notes = (await s.execute(select(outbox.c.payload).where(outbox.c.topic != topic))).scalars()
        assert [box.codec.decode(p).payload["note"] for p in notes] == ["ok" * 10]
    (letter,) = await read_all(kafka_bootstrap, f"{topic}.dlq", expected=1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["dlq-error-type"] == "EventTooLarge"
    assert "exceeds the limit of 2000 bytes" in headers["dlq-reason"]
    assert codec.decode(letter.value).payload["seq"] == 2


async def test_a_row_the_client_refuses_before_sending_is_quarantined(
    kafka_bootstrap, new_topic, new_db
):
    # Written before the size check existed (or with a larger limit): over aiokafka's
    # max_request_size, send() itself raises, and the rows around it still go out.
    topic = await new_topic(partitions=1)
    codec = codec_for(topic)
    db = await new_db("svc")
    huge = Outbox(codec, "svc", max_event_bytes=10**7)
    await emit(
        db,
        huge,
        [
            Ping(aggregate_id="k", seq=0),
            Ping(aggregate_id="k", seq=1, note="h" * 1_100_000),
            Ping(aggregate_id="k", seq=2),
        ],
    )
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=FAST)
    assert await relay.drain() == 3
    assert (relay.published, relay.quarantined) == (2, 1)
    (row,) = await list_rows(db, "svc")
    assert row.error_type == "MessageSizeTooLargeError" and "max_request_size" in row.reason
    assert per_key(await published(kafka_bootstrap, topic, codec)) == {"k": [0, 2]}
