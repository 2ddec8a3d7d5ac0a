"""Readiness means "can serve": four instances of one service over a three-partition topic
(one group, one database) are all ready, the one holding no partition included, and an
instance whose consumer has not joined its group yet says so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from events.consumer import EventConsumer
from events.db import Database
from events.kafka import KafkaConnection
from events.relay import OutboxRelay
from events.service import Service, ServiceContext, ServiceSettings, build_app
from tests.integration.harness import codec_for, ping_consumer, ping_router, test_metadata
from tests.support import eventually, unique
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration


def instance(
    db: Database, consumer: EventConsumer, bootstrap: str, tmp_path: Path
) -> tuple[Service, ServiceContext]:
    """One instance's service and context around its own consumer (no relay runs)."""
    settings = ServiceSettings(database_url=db.url, var_dir=tmp_path)
    kafka = KafkaConnection(bootstrap)
    relay = OutboxRelay(db, kafka)
    ctx = ServiceContext("svc", settings, db, consumer.codec, consumer.outbox, relay, kafka)
    ctx.consumer = consumer
    service = Service("svc", test_metadata, ping_router(), topics=[], relay=False)
    return service, ctx


@contextlib.asynccontextmanager
async def api(service: Service, ctx: ServiceContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(service, ctx))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=operator_headers()
    ) as http:
        yield http


async def test_four_instances_of_a_three_partition_topic_are_all_ready(
    kafka_bootstrap, new_topic, new_db, tmp_path
):
    topic = await new_topic(partitions=3)
    codec = codec_for(topic)
    db = await new_db("svc")
    group = unique("group")
    consumers = [
        ping_consumer(
            group,
            topic,
            db=db,
            codec=codec,
            bootstrap=kafka_bootstrap,
            consumer_options={"client_id": f"{group}-{n}"},
        )
        for n in range(4)
    ]
    instances = [instance(db, c, kafka_bootstrap, tmp_path) for c in consumers]

    # Not started: the API answers, /ready says the consumer is not in its group.
    async with api(*instances[0]) as http:
        assert (await http.get("/health")).status_code == 200
        r = await http.get("/ready")
        body = r.json()
        assert r.status_code == 503 and body["checks"]["consumer"] is False
        assert body["reasons"] == ["the svc consumer has not joined its group yet"]

    try:
        for c in consumers:
            await c.start()

        def settled() -> bool:
            # Every member joined and the three partitions are shared out, one member idle.
            held = sorted(len(c.assignment) for c in consumers)
            return all(c.joined for c in consumers) and held == [0, 1, 1, 1]

        # The members poll for the group to rebalance; run() drives that.
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
        try:
            await eventually(settled, deadline_s=60, what="four members, three partitions")
            partitions = []
            for service, ctx in instances:
                async with api(service, ctx) as http:
                    r = await http.get("/ready")
                    assert r.status_code == 200, r.text
                    assert r.json()["checks"]["consumer"] is True
                    partitions.append(r.json()["checks"]["partitions"])
            assert sorted(partitions) == [0, 1, 1, 1]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for c in consumers:
            await c.close()
