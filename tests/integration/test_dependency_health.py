"""A service's /health shows the breaker state of each external system its handlers call,
and the service closes their clients when it stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData

from events.components import close_components
from events.dependency import Dependency, DependencySettings, DependencyUnavailable
from events.service import Service, ServiceSettings, build_components
from infra.broker import free_ports
from tests.integration.service_kit import http_client, open_service
from tests.support import unique

pytestmark = pytest.mark.integration


async def test_health_shows_each_dependencys_breaker(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there: every call is refused
    name = unique("nobody")
    dependency = Dependency(
        DependencySettings(
            name=name,
            base_url=f"http://127.0.0.1:{port}",
            attempts=1,
            failure_threshold=1,
            recovery_s=60.0,
        )
    )
    service = Service(name="healthy", metadata=MetaData(), dependencies=[dependency])
    async with open_service(service, ServiceSettings, tmp_path) as ctx:
        components = build_components(service, ctx)
        async with http_client(ctx) as http:
            before = (await http.get("/health")).json()
            with pytest.raises(DependencyUnavailable):
                await dependency.post("/v1/x", {}, idempotency_key="k")  # opens the breaker
            after = (await http.get("/health")).json()
        await close_components("healthy", components)
    assert before == {"status": "ok", "service": "healthy", "dependencies": {name: "closed"}}
    assert after["dependencies"] == {name: "open"}
    assert not dependency.started  # closed with the service's components


async def test_a_service_without_dependencies_says_nothing_of_them(tmp_path: Path) -> None:
    service = Service(name="plain", metadata=MetaData())
    async with (
        open_service(service, ServiceSettings, tmp_path) as ctx,
        http_client(ctx) as http,
    ):
        body = (await http.get("/health")).json()
    assert body == {"status": "ok", "service": "plain"}
