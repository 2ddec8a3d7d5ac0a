"""``GET /api/v1/analytics``: the analytics service's windows, proxied for the dashboard.

The page talks to one origin (this service), so the browser needs no CORS and the analytics
service need not be exposed. Analytics is optional: when it is down, slow or answers
nonsense, the proxy says so quickly (503 or 502 with a ``detail``) and the page shows
"analytics unavailable"; the read API is unaffected.

It needs an operator token and forwards the caller's own ``Authorization`` header, which
analytics verifies itself: no token of the query service's own to keep, and it works
whether tokens are signed with a shared secret or a private key the platform never holds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field, ValidationError

from events.auth import OPERATOR_READ, requires

log = logging.getLogger(__name__)

Window = Literal["minute", "hour"]
MAX_LIMIT = 1000  # what the analytics service accepts


class Durations(BaseModel):
    count: int
    p50: float | None
    p90: float | None
    p99: float | None


class AnalyticsWindow(BaseModel):
    start: datetime
    end: datetime
    placed: int
    completed: int
    rejected: int
    cancelled: int
    captured_cents: int
    refunded_cents: int
    failure_reasons: dict[str, int]
    duration_ms: Durations = Field(description="Saga duration, placed to terminal")


class Analytics(BaseModel):
    window: Window
    size_s: int
    windows: list[AnalyticsWindow] = Field(description="Oldest first")


class Problem(BaseModel):
    detail: Any = Field(description="What is wrong, in words (or a list of field errors)")


class Unavailable(Exception):
    """Analytics cannot answer now (down, slow, failing): 503."""


class BadAnswer(Exception):
    """Analytics answered something this proxy cannot pass on: 502."""


class AnalyticsClient:
    """One pooled HTTP client for the process: built at start-up, closed at shutdown."""

    def __init__(self, base_url: str, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        # Short: the page polls every few seconds and a slow answer is as good as none.
        self.http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0))
        )
        self._down = False  # log transitions only, not every poll while it is down

    async def windows(
        self, window: Window, limit: int, authorization: str | None = None
    ) -> Analytics:
        headers = {"Authorization": authorization} if authorization else {}
        try:
            r = await self.http.get(
                "/api/v1/analytics", params={"window": window, "limit": limit}, headers=headers
            )
        except httpx.TimeoutException:
            raise self._unavailable("no answer in time") from None
        except httpx.HTTPError as exc:
            raise self._unavailable(f"cannot connect ({type(exc).__name__})") from None
        if r.status_code >= 500 or r.status_code in (404, 408, 429):
            # 404 too: during a rolling deploy the route may not be there yet.
            raise self._unavailable(f"it answered HTTP {r.status_code}")
        if r.status_code != 200:
            raise BadAnswer(f"analytics refused the request (HTTP {r.status_code})")
        try:
            body = Analytics.model_validate_json(r.content)
        except ValidationError as exc:
            n = exc.error_count()
            raise BadAnswer(f"analytics answered an unexpected body ({n} errors)") from None
        if self._down:
            log.info("analytics at %s answers again", self.base_url)
            self._down = False
        return body

    def _unavailable(self, why: str) -> Unavailable:
        if not self._down:
            log.warning("analytics at %s unavailable: %s", self.base_url, why)
            self._down = True
        return Unavailable(why)

    async def aclose(self) -> None:
        await self.http.aclose()


def routes(client: AnalyticsClient) -> APIRouter:
    router = APIRouter(tags=["dashboard"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get(
        "/analytics",
        response_model=Analytics,
        responses={
            422: {"model": Problem, "description": "Bad parameters"},
            502: {"model": Problem, "description": "Analytics answered something unexpected"},
            503: {"model": Problem, "description": "Analytics is down or too slow"},
        },
    )
    async def analytics(
        request: Request,
        window: Annotated[Window, Query(description="Window size")] = "minute",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Latest N windows")] = 60,
    ) -> Any:
        """The latest windows of the analytics service (orders by outcome, revenue, saga
        durations, failure reasons), oldest first."""
        try:
            return await client.windows(window, limit, request.headers.get("authorization"))
        except Unavailable as exc:
            raise HTTPException(503, f"analytics unavailable: {exc}") from None
        except BadAnswer as exc:
            raise HTTPException(502, str(exc)) from None

    return router
