"""A dependency's outage pauses only the partitions whose events need it: on the real
broker, with the dependency a real HTTP server started here (down, then up again), the
partition waits at its event, the other partitions' events keep being applied, nothing is
dead-lettered, and once it is back every event is applied exactly once and every offset
committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY
from sqlalchemy import insert

from events.catalogue import dead_letter_topic
from events.codec import AvroCodec
from events.components import uvicorn_server
from events.consumer import EventConsumer
from events.db import Database
from events.dependency import Dependency, DependencySettings
from events.envelope import Envelope, Event, new_event_id, utcnow
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.routing import RetryPolicy, Router
from infra.broker import free_ports
from tests.integration.harness import Ping, applied, applied_rows, codec_for, running, topic_size
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


@dataclass
class Downstream:
    """A third party over real HTTP: acts once per idempotency key, answers 503 while down."""

    down: bool = True
    acted: dict[str, int] = field(default_factory=dict)  # key -> times it acted (must be 1)
    refused: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/charges")
        async def charge(request: Request) -> JSONResponse:
            if self.down:
                self.refused += 1
                return JSONResponse({"error": "down"}, status_code=503)
            key = request.headers["Idempotency-Key"]
            if key in self.acted:
                return JSONResponse({"key": key}, status_code=201)  # the first answer again
            self.acted[key] = 1
            return JSONResponse({"key": key}, status_code=201)

        return app


@contextlib.asynccontextmanager
async def serving(downstream: Downstream) -> AsyncIterator[str]:
    (port,) = free_ports(1)
    server = uvicorn_server(downstream.app(), "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="the downstream server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def calling_router(dependency: Dependency, flaky: set[int]) -> Router:
    """Pings noted "call" charge the dependency first (key: aggregate and seq); a seq in
    ``flaky`` fails once (an error of the event, retried)."""
    router = Router()

    @router.on(Ping)
    async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
        p = event.payload
        if p.note == "call":
            answer = await dependency.post(
                "/v1/charges", {"seq": p.seq}, idempotency_key=f"{p.aggregate_id}:{p.seq}"
            )
            assert answer.status == 201, answer
        if p.seq in flaky:
            flaky.discard(p.seq)
            raise RuntimeError(f"seq {p.seq} fails once")
        await uow.session.execute(
            insert(applied).values(aggregate_id=p.aggregate_id, seq=p.seq, event_id=event.event_id)
        )

    return router


async def send(
    bootstrap: str, codec: AvroCodec, topic: str, partition: int, key: str, seqs: range, note: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for seq in seqs:
            env = Envelope(new_event_id(), "Ping", 1, utcnow(), "test", new_event_id(), key)
            value = codec.encode("Ping", {"aggregate_id": key, "seq": seq, "note": note})
            await producer.send_and_wait(
                topic, value, key=key.encode(), partition=partition, headers=env.to_headers()
            )
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def paused_gauge(consumer: str) -> float:
    value = REGISTRY.get_sample_value("choreo_consumer_paused_partitions", {"consumer": consumer})
    return value or 0.0


def consumer_for(
    name: str, topic: str, db: Database, codec: AvroCodec, bootstrap: str, router: Router
) -> EventConsumer:
    return EventConsumer(
        name=name,
        topics=[topic],
        router=router,
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(bootstrap),
        retry=RetryPolicy(attempts=3, initial_s=0.01, max_s=0.02),
        commit_interval_ms=200,
    )


def settings(url: str) -> DependencySettings:
    return DependencySettings(
        name=unique("downstream"),
        base_url=url,
        timeout_s=2.0,
        attempts=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        failure_threshold=2,
        recovery_s=0.5,
    )


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one-by-one"])
async def test_an_outage_pauses_its_partition_while_the_others_flow(
    kafka_bootstrap: str, new_topic: Any, new_db: Any, one_by_one: bool
) -> None:
    topic = await new_topic(partitions=2)
    codec = codec_for(topic)
    db: Database = await new_db("service")
    name = unique("pausing")
    downstream = Downstream(down=True)
    async with serving(downstream) as url:
        dependency = Dependency(settings(url))
        flaky = {50} if one_by_one else set()
        consumer = consumer_for(
            name, topic, db, codec, kafka_bootstrap, calling_router(dependency, flaky)
        )
        # In one fetch: partition 0's events need the dependency; partition 1's do not.
        # With "one-by-one" an event before them fails once, so the batch is taken apart
        # and the outage is met applying events one by one.
        early = range(50, 51) if one_by_one else range(0)
        await send(kafka_bootstrap, codec, topic, 0, "early", early, "")
        await send(kafka_bootstrap, codec, topic, 0, "needs", range(5), "call")
        await send(kafka_bootstrap, codec, topic, 1, "local", range(100, 105), "")
        try:
            async with running(consumer):
                await eventually(
                    lambda: TopicPartition(topic, 0) in consumer.paused, what="partition 0 paused"
                )
                assert paused_gauge(name) >= 1
                await eventually(
                    lambda: _seqs(db, "local", range(100, 105)), what="partition 1 applied"
                )
                await send(kafka_bootstrap, codec, topic, 1, "local", range(105, 110), "")
                await eventually(
                    lambda: _seqs(db, "local", range(100, 110)), what="partition 1 keeps flowing"
                )
                assert [seq for key, seq in await applied_rows(db) if key == "needs"] == []
                assert dependency.state in ("open", "half-open")

                downstream.down = False  # back: the redelivered event probes, then all flow
                await eventually(
                    lambda: _seqs(db, "needs", range(5)), what="partition 0 applied once back"
                )
                assert dependency.state == "closed"
                await eventually(
                    lambda: _committed_to_the_end(
                        kafka_bootstrap, name, {0: 5 + len(early), 1: 10}
                    ),
                    what="every offset committed",
                )
                await eventually(lambda: paused_gauge(name) == 0, what="nothing paused")
        finally:
            await dependency.close()

    rows = await applied_rows(db)
    assert sorted(rows) == sorted(
        [("early", s) for s in early]
        + [("needs", s) for s in range(5)]
        + [("local", s) for s in range(100, 110)]
    ), "each event applied exactly once"
    assert downstream.acted == {f"needs:{s}": 1 for s in range(5)}
    assert downstream.refused >= 2
    assert consumer.stats.dead_lettered == 0
    assert not flaky  # the early event failed once (one by one, then)
    assert consumer.stats.retries == 0  # and the outage counted no retry
    assert await topic_size(kafka_bootstrap, dead_letter_topic(topic)) == 0


async def test_a_rebalance_forgets_the_pause_and_the_next_owner_starts_at_the_event(
    kafka_bootstrap: str, new_topic: Any, new_db: Any
) -> None:
    topic = await new_topic(partitions=2)
    codec = codec_for(topic)
    db: Database = await new_db("service")
    name = unique("pausing")
    downstream = Downstream(down=True)
    async with serving(downstream) as url:
        first_dep, second_dep = Dependency(settings(url)), Dependency(settings(url))
        first = consumer_for(
            name, topic, db, codec, kafka_bootstrap, calling_router(first_dep, set())
        )
        second = consumer_for(
            name, topic, db, codec, kafka_bootstrap, calling_router(second_dep, set())
        )
        await send(kafka_bootstrap, codec, topic, 0, "needs", range(3), "call")
        await send(kafka_bootstrap, codec, topic, 1, "needs-too", range(10, 13), "call")
        try:
            async with running(first):
                await eventually(lambda: len(first.paused) == 2, what="both partitions paused")
                async with running(second):  # joins: the group rebalances
                    await eventually(
                        lambda: (
                            first.assignment
                            and second.assignment
                            and len(first.assignment | second.assignment) == 2
                        ),
                        what="the partitions shared",
                    )
                    downstream.down = False
                    await eventually(
                        lambda: _all_applied(db), what="every event applied after the rebalance"
                    )
                    await eventually(
                        lambda: _committed_to_the_end(kafka_bootstrap, name, {0: 3, 1: 3}),
                        what="every offset committed",
                    )
        finally:
            await first_dep.close()
            await second_dep.close()
    rows = await applied_rows(db)
    assert sorted(rows) == sorted(
        [("needs", s) for s in range(3)] + [("needs-too", s) for s in range(10, 13)]
    )
    assert set(downstream.acted) == {f"needs:{s}" for s in range(3)} | {
        f"needs-too:{s}" for s in range(10, 13)
    }
    assert first.stats.dead_lettered == second.stats.dead_lettered == 0
    assert await topic_size(kafka_bootstrap, dead_letter_topic(topic)) == 0


async def _seqs(db: Database, key: str, expected: range) -> bool:
    return sorted(s for k, s in await applied_rows(db) if k == key) == list(expected)


async def _all_applied(db: Database) -> bool:
    return await _seqs(db, "needs", range(3)) and await _seqs(db, "needs-too", range(10, 13))


async def _committed_to_the_end(bootstrap: str, group: str, ends: dict[int, int]) -> bool:
    return await committed(bootstrap, group) == ends
