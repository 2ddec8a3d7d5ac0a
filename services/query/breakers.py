"""``GET /api/v1/dependencies``: the circuit breakers of the external systems the saga's
services call (the payment provider, the carrier), for the dashboard.

Each service that calls one says its breakers' states in its ``/health`` body
(``events.service``: ``{"dependencies": {"provider": "closed"}}``); this reads the
``/health`` of each service listed in ``DEPENDENCY_HEALTH_URLS`` (``name=url`` pairs, one per
instance) at once, with a short timeout, when the page asks. A service that does not
answer is shown as not reached, the others as they are; the read API is unaffected.
``/health`` needs no token, so the query service needs none of its own.
"""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from events.auth import OPERATOR_READ, requires

_PAIR = re.compile(r"^([A-Za-z0-9_.-]+)=(https?://\S+)$")


class ServiceBreakers(BaseModel):
    service: str = Field(description="The name given in DEPENDENCY_HEALTH_URLS")
    url: str
    reached: bool = Field(description="False: its /health did not answer in time")
    dependencies: dict[str, str] = Field(
        default_factory=dict, description="Each external system's breaker: closed, half-open, open"
    )


class Breakers(BaseModel):
    services: list[ServiceBreakers]


def parse_targets(text: str) -> list[tuple[str, str]]:
    """``"payments=http://127.0.0.1:8103,shipping=http://..."`` as (name, url) pairs;
    ValueError naming the first bad pair."""
    targets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _PAIR.match(part)
        if match is None:
            raise ValueError(f"not name=http(s)://host:port: {part!r}")
        targets.append((match[1], match[2].rstrip("/")))
    return targets


class BreakerWatch:
    """One pooled client for the process (built at start-up, closed at shutdown)."""

    def __init__(
        self,
        targets: list[tuple[str, str]],
        timeout_s: float = 1.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.targets = targets
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), transport=transport)

    async def read(self) -> Breakers:
        found = await asyncio.gather(*(self._one(name, url) for name, url in self.targets))
        return Breakers(services=list(found))

    async def _one(self, name: str, url: str) -> ServiceBreakers:
        try:
            answer = await self.http.get(f"{url}/health")
            body = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        if not isinstance(body, dict):
            return ServiceBreakers(service=name, url=url, reached=False)
        states = body.get("dependencies")
        dependencies = (
            {str(k): str(v) for k, v in states.items()} if isinstance(states, dict) else {}
        )
        return ServiceBreakers(service=name, url=url, reached=True, dependencies=dependencies)

    async def aclose(self) -> None:
        await self.http.aclose()


def routes(watch: BreakerWatch) -> APIRouter:
    router = APIRouter(tags=["dashboard"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get("/dependencies", response_model=Breakers)
    async def dependencies() -> Breakers:
        """The breaker of each external system the listed services call, as each says."""
        return await watch.read()

    return router
