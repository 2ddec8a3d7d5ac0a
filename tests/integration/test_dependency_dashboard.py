"""The dashboard's breaker view end to end without a broker: a service with an external
dependency serves its real /health on a socket, its breaker is opened by failing calls,
and the query app's GET /api/v1/dependencies reports it (and a service that does not
answer as not reached)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData

from events.components import close_components, uvicorn_server
from events.dependency import Dependency, DependencySettings, DependencyUnavailable
from events.service import Service, ServiceSettings, build_app, prepare
from infra.broker import free_ports
from services.query.app import Settings, build_service
from tests.integration.service_kit import open_service
from tests.support import eventually
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration


async def test_the_dashboard_reports_an_open_breaker(tmp_path: Path, database_url: Any) -> None:
    payments_port, nobody = free_ports(2)
    dependency = Dependency(
        DependencySettings(
            name="provider",
            base_url=f"http://127.0.0.1:{nobody}",  # refused: the provider is down
            attempts=1,
            failure_threshold=1,
            recovery_s=60.0,
        )
    )
    caller = Service(name="payments", metadata=MetaData(), dependencies=[dependency])
    async with open_service(caller, ServiceSettings, tmp_path) as caller_ctx:
        server = uvicorn_server(build_app(caller, caller_ctx), "127.0.0.1", payments_port)
        task = asyncio.create_task(server.serve())
        settings = Settings(
            kafka_bootstrap_servers="127.0.0.1:1",
            database_url=database_url("dash"),
            http_port=0,
            dependency_health_urls=(
                f"payments=http://127.0.0.1:{payments_port},shipping=http://127.0.0.1:{nobody}"
            ),
        )
        query = build_service(settings)
        ctx = await prepare(query, settings)
        transport = httpx.ASGITransport(app=build_app(query, ctx))
        try:
            await eventually(lambda: server.started, deadline_s=10, what="payments' /health")
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost", headers=operator_headers()
            ) as http:
                before = (await http.get("/api/v1/dependencies")).json()
                with pytest.raises(DependencyUnavailable):
                    await dependency.post("/v1/authorisations", {}, idempotency_key="k")
                after = await http.get("/api/v1/dependencies")
                anonymous = await http.get("/api/v1/dependencies", headers={"Authorization": ""})
        finally:
            server.should_exit = True
            await task
            await dependency.close()
            await close_components("query", ctx.components)
            await ctx.db.dispose()
    payments_url = f"http://127.0.0.1:{payments_port}"
    assert before["services"][0] == {
        "service": "payments",
        "url": payments_url,
        "reached": True,
        "dependencies": {"provider": "closed"},
    }
    assert after.status_code == 200
    payments, shipping = after.json()["services"]
    assert payments["dependencies"] == {"provider": "open"}
    assert shipping["service"] == "shipping" and not shipping["reached"]
    assert anonymous.status_code == 401  # an operator's view, like the rest of the dashboard
