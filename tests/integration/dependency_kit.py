"""Payments' and shipping's tests against the real stand-ins: a stand-in as its own process
(its own database, a free port), its admin routes (faults, the declined list), the service's
handlers over a fresh database calling it (:func:`calling`), and an httpx transport that
forwards to it while recording what came back, or losing an answer after the stand-in acted
(the client sees a timeout: the unknown outcome)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from events.dependency import Dependency, DependencySettings
from events.service import Service, ServiceContext, ServiceSettings
from events.supervisor import ProcessSpec, start, stop, wait_ready
from infra.broker import free_ports
from tests.integration.service_kit import open_service


class _Client(Protocol):
    """The provider's or the carrier's client (services.payments.provider, .shipping.carrier)."""

    @property
    def dependency(self) -> Dependency: ...


C = TypeVar("C", bound=_Client)


@dataclass
class StandIn:
    name: str
    url: str
    spec: ProcessSpec
    var_dir: Path
    database_url: str  # its own database, for a test that must look past its faulted API

    async def admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            r = await http.put(path, json=body)
            r.raise_for_status()
            answer: dict[str, Any] = r.json()
            return answer

    async def faults(self, **faults: Any) -> dict[str, Any]:
        """PUT /admin/faults (failure_rate, latency_ms, down, down_for_s)."""
        return await self.admin("/admin/faults", faults)

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            r = await http.get(path)
            r.raise_for_status()
            return r.json()

    def settings(self, **overrides: Any) -> DependencySettings:
        """Client settings for this stand-in: quick backoff, so tests wait little."""
        values: dict[str, Any] = {
            "name": self.name,
            "base_url": self.url,
            "timeout_s": 5.0,
            "attempts": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "failure_threshold": 50,
            "recovery_s": 1.0,
        }
        return DependencySettings(**(values | overrides))


@contextlib.asynccontextmanager
async def standin(
    name: str, tmp_path: Path, database_url: Callable[[str], str], **env: str
) -> AsyncIterator[StandIn]:
    """``python -m services.<name>`` on a free port with a fresh database, until the end."""
    (port,) = free_ports(1)
    spec = ProcessSpec(name, f"services.{name}", port)
    var_dir = tmp_path / f"{name}-var"
    url = database_url(name)
    environ = {f"{name.upper()}_DATABASE_URL": url, **env}
    # A stand-in knows nothing of Kafka: the bootstrap is never dialled.
    start([spec], var_dir=var_dir, bootstrap="127.0.0.1:9", env=environ)
    try:
        await asyncio.to_thread(wait_ready, [spec], var_dir=var_dir, deadline_s=60)
        yield StandIn(name, f"http://127.0.0.1:{port}", spec, var_dir, url)
    finally:
        stop([spec], var_dir=var_dir)


@contextlib.asynccontextmanager
async def calling(
    running: StandIn,
    client_type: Callable[..., C],
    service: Callable[[C], Service],
    settings_type: type[ServiceSettings],
    tmp_path: Path,
    database_url: str,
    recorder: Recorder | None = None,
    **client: Any,
) -> AsyncIterator[tuple[ServiceContext, Recorder]]:
    """The handlers of ``service(client)`` over a fresh database, the client calling the
    stand-in ``running`` through ``recorder``; ``client`` overrides its settings."""
    recorder = recorder or Recorder()
    client_of = client_type(running.settings(**client), transport=recorder)
    async with open_service(service(client_of), settings_type, tmp_path, database_url) as ctx:
        try:
            yield ctx, recorder
        finally:
            await client_of.dependency.close()


@dataclass
class Seen:
    method: str
    path: str
    status: int
    replayed: bool
    idempotency_key: str | None


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Forwards every request to the real stand-in and records each answer; the first
    answer to a path ending in ``lose_after`` is read and then thrown away as a read
    timeout, as when the network drops it after the stand-in acted."""

    lose_after: str | None = None
    seen: list[Seen] = field(default_factory=list)
    lost: int = 0
    inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        path = request.url.path
        self.seen.append(
            Seen(
                request.method,
                path,
                response.status_code,
                response.headers.get("Idempotent-Replayed") == "true",
                request.headers.get("Idempotency-Key"),
            )
        )
        if self.lose_after is not None and path.endswith(self.lose_after) and not self.lost:
            self.lost += 1
            await response.aclose()
            raise httpx.ReadTimeout("the answer was lost after the stand-in acted", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def to(self, suffix: str) -> list[Seen]:
        """The requests whose path ends in ``suffix``, in order."""
        return [s for s in self.seen if s.path.endswith(suffix)]
