"""Health tells the truth about the outbox: while a row cannot be published the backlog
gauges show it, `/ready` answers 503 saying why and `choreo status` prints the reason and
the quarantined rows; once the broker is back, all clears. An API whose request would make
an event over the size limit answers 422."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY

from events.cli.main import main
from events.db import Database
from events.envelope import utcnow
from events.kafka import KafkaConnection, reliable_producer
from events.outbox import Outbox
from events.relay import OutboxRelay, RelayConfig
from events.routing import Router
from events.service import (
    Service,
    ServiceContext,
    ServiceSettings,
    build_app,
    http_server,
)
from events.supervisor import ProcessSpec
from events.tables import outbox_quarantine
from infra.broker import free_port
from tests.integration.harness import Ping, codec_for, running_relay, test_metadata
from tests.support import eventually, unique
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration

DEAD = "127.0.0.1:1"  # nothing listens: every connection is refused


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def pings_api(ctx: ServiceContext) -> APIRouter:
    router = APIRouter()

    @router.post("/pings/{key}", status_code=201)
    async def ping(key: str, note: str = "") -> dict[str, str]:
        async with ctx.uow() as uow:
            env = uow.emit(Ping(aggregate_id=key, seq=0, note=note), key=key)
            await uow.commit()
        return {"event_id": env.event_id}

    return router


@contextlib.asynccontextmanager
async def service_over(
    db: Database, topic: str, broker: dict[str, str], tmp_path: Path, **settings: object
) -> AsyncIterator[tuple[ServiceContext, Service]]:
    """A service with a pings API whose relay connects to ``broker["at"]`` (changeable)."""
    config = ServiceSettings(database_url=db.url, var_dir=tmp_path, **settings)  # type: ignore[arg-type]
    codec = codec_for(topic)
    box = Outbox(codec, "svc", max_event_bytes=config.max_event_bytes)
    relay = OutboxRelay(
        db,
        KafkaConnection(broker["at"]),
        config=RelayConfig(
            idle_poll_s=0.05, backoff_initial_s=0.05, backoff_max_s=0.2, gauge_every_s=0.05
        ),
        producer_factory=lambda: reliable_producer(
            KafkaConnection(broker["at"]), client_id="svc-relay"
        ),
    )
    box.on_commit(relay.notify)
    ctx = ServiceContext("svc", config, db, codec, box, relay, KafkaConnection(broker["at"]))
    service = Service("svc", test_metadata, Router(), topics=[], api=pings_api)
    async with running_relay(relay):
        yield ctx, service


async def test_while_the_relay_cannot_publish_the_backlog_shows_and_ready_says_why(
    kafka_bootstrap, new_topic, new_db, tmp_path
):
    topic = await new_topic(partitions=1)
    db = await new_db("svc")
    broker = {"at": DEAD}
    async with (
        service_over(db, topic, broker, tmp_path, relay_stall_s=0.3, max_event_bytes=4096) as (
            ctx,
            service,
        ),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(service, ctx)),
            base_url="http://localhost",
            headers=operator_headers(),
        ) as http,
    ):
        assert (await http.get("/ready")).status_code == 200  # nothing waits
        r = await http.post(f"/api/v1/pings/{unique('k')}", params={"note": "n" * 5000})
        assert r.status_code == 422, r.text
        assert "exceeds the limit of 4096 bytes" in r.json()["detail"]

        key = unique("k")
        assert (await http.post(f"/api/v1/pings/{key}")).status_code == 201

        async def not_ready() -> dict[str, object] | None:
            r = await http.get("/ready")
            return r.json() if r.status_code == 503 else None

        body = await eventually(not_ready, deadline_s=20, what="/ready to say the relay is stuck")
        assert body["checks"]["outbox"] is False  # type: ignore[index]
        (reason,) = body["reasons"]  # type: ignore[index]
        assert "published nothing" in reason and "1 row(s) wait" in reason
        assert "KafkaConnectionError" in reason
        assert sample("choreo_outbox_backlog") == 1
        assert sample("choreo_outbox_oldest_age_seconds") > 0
        assert ctx.relay.failures > 0

        broker["at"] = kafka_bootstrap  # the broker is reachable again
        await eventually(lambda: ctx.relay.published == 1, what="the row published")
        await eventually(
            lambda: sample("choreo_outbox_backlog") == 0, what="the backlog gauge back at 0"
        )
        assert (await http.get("/ready")).status_code == 200


async def test_choreo_status_shows_the_quarantine_and_why_a_service_is_not_ready(
    new_topic, new_db, tmp_path, monkeypatch, capsys
):
    topic = await new_topic(partitions=1)
    db = await new_db("svc")
    async with db.session() as s, s.begin():  # a row quarantined before a restart
        await s.execute(
            outbox_quarantine.insert().values(
                outbox_id=1,
                event_id=unique("e"),
                topic=topic,
                key="k",
                event_type="Ping",
                payload=b"x",
                headers="{}",
                created_at=utcnow(),
                error_type="MessageSizeTooLargeError",
                reason="too large",
                quarantined_at=utcnow(),
            )
        )
    port = free_port()
    async with service_over(db, topic, {"at": DEAD}, tmp_path, relay_stall_s=0.3) as (
        ctx,
        service,
    ):
        server = http_server(
            build_app(service, ctx), ctx.settings.model_copy(update={"http_port": port})
        )
        serving = asyncio.create_task(server.serve())
        try:
            async with ctx.uow() as uow:
                uow.emit(Ping(aggregate_id="k", seq=1), key="k")
                await uow.commit()
            await eventually(lambda: ctx.relay.stall_reason(0.3), what="the relay to stall")
            monkeypatch.setattr(
                "events.cli.status.load_manifest", lambda: [ProcessSpec("svc", "svc", port)]
            )
            monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", DEAD)
            capsys.readouterr()
            assert await asyncio.to_thread(main, ["status", "--output", "json"]) == 0
            (row,) = json.loads(capsys.readouterr().out)["services"]
            assert (row["up"], row["ready"], row["quarantined"], row["backlog"]) == (
                True,
                False,
                1,
                1,
            )
            assert "published nothing" in row["not_ready"][0]
            assert await asyncio.to_thread(main, ["status"]) == 0
            text = capsys.readouterr().out
            assert "quar" in text and "not ready: outbox relay has published nothing" in text
        finally:
            server.should_exit = True
            await serving
