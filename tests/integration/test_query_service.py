"""The query service as a process: ready once caught up, serves HTTP, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.components import close_components
from events.db import sqlite_url
from events.kafka import KafkaConnection
from events.service import build_app, prepare
from events.settings import REPO_ROOT
from events.topics import apply_topics
from infra.broker import free_port
from services.query.app import Settings, build_service
from tests.integration.test_query_kit import PATHS, Bus, Saga, min_position, publish_saga
from tests.support import eventually, unique
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration


async def test_the_service_process_serves_and_stops_gracefully(
    kafka_bootstrap: str, tmp_path: Path
):
    prefix = unique("qs") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "DATABASE_URL": sqlite_url(tmp_path / "query.db"),
        "HTTP_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log = (tmp_path / "query.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.query",
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=operator_headers()) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, deadline_s=60, poll_s=0.2, what="the service to be ready")
            saga = Saga()
            orders = [saga.order(p, saga.customer("x"), [(saga.sku("y"), 1, 5)]) for p in PATHS]
            published = await publish_saga(Bus(kafka_bootstrap, AvroCodec(catalogue)), saga)
            for order in orders:
                r = await http.get(
                    f"/api/v1/orders/{order.order_id}",
                    params={"min_position": min_position(published)},
                )
                assert r.status_code == 200, r.text
            r = await http.get("/api/v1/customers/nobody")
            assert r.status_code == 404 and r.json() == {"detail": "customer nobody not found"}
            assert (await http.get("/openapi.json")).json()["info"]["title"] == "choreo query"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
    text = (tmp_path / "query.log").read_text()
    assert "query started" in text and "query stopped" in text
    assert "Traceback" not in text
    # The platform's structured logs, as every service writes them (events.logs).
    for line in text.splitlines():
        record = json.loads(line)
        assert record["service"] == "query", line
        assert {"event", "level", "logger", "timestamp", "module"} <= record.keys(), line


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path):
    env = {**os.environ, "HTTP_PORT": "not-a-port", "VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.query"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("query: bad setting HTTP_PORT='not-a-port'")
    assert len(done.stderr.strip().splitlines()) == 1


async def test_before_the_projection_starts_reads_say_so(database_url):
    """Broker unreachable: the API still answers, 503 for data it does not have yet."""
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1", database_url=database_url("early"), http_port=0
    )
    service = build_service(settings)
    ctx = await prepare(service, settings)
    transport = httpx.ASGITransport(app=build_app(service, ctx), raise_app_exceptions=False)
    try:
        headers = operator_headers()
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as http:
            assert (await http.get("/health")).status_code == 200
            ready = await http.get("/ready")
            assert ready.status_code == 503 and not ready.json()["checks"]["projection_started"]
            (state,) = (await http.get("/api/v1/projections")).json()
            assert state["started"] is False and state["active_generation"] is None
            for path in ("/api/v1/orders", f"/api/v1/orders/{uuid.uuid4()}", "/api/v1/skus/x"):
                r = await http.get(path)
                assert r.status_code == 503 and "starting" in r.json()["detail"], path
            r = await http.get("/api/v1/orders", params={"min_position": "t:0:1"})
            assert r.status_code == 503
    finally:
        await close_components("query", ctx.components)
        await ctx.db.dispose()
