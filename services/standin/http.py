"""The stand-ins' HTTP shell: faults and counts around every ``/v1`` request, errors as
``{"error": "..."}``, the ``Idempotency-Key`` header, ``/health`` ``/ready`` ``/metrics`` and
``/admin/faults``.

A plain FastAPI app, not ``events.service``: that one is a Kafka service's shell (consumer,
outbox, relay, JWT on ``/api/v1``), while a third party's API has none of these. Its server
spans come from the same FastAPI instrumentation (``events.telemetry.instrument_app``), each a
child of the caller's ``traceparent``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.db import Database
from events.http_input import BodyLimit
from events.telemetry import instrument_app
from services.standin.faults import Faults
from services.standin.idempotency import MAX_KEY_LENGTH, Act, Answer, fingerprint, once
from services.standin.metrics import REQUESTS, outcome

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class FaultsAndCounts:
    """Around each ``/v1`` request: an injected 503 before anything is done, the injected
    latency after the answer is ready (its effect committed) and before it is sent, and the
    request counted by outcome."""

    def __init__(self, app: ASGIApp, *, name: str, faults: Faults) -> None:
        self.app = app
        self.name = name
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        now = time.monotonic()
        if self.faults.refuses(now, random.random()):
            REQUESTS.labels(self.name, method, "*", "fault").inc()
            remaining = self.faults.down_for(now)
            headers = {"Retry-After": str(math.ceil(remaining))} if remaining else None
            body = {"error": f"{self.name} is unavailable (an injected fault)"}
            await JSONResponse(body, 503, headers=headers)(scope, receive, send)
            return
        delay_s = self.faults.latency_ms / 1000
        seen: dict[str, Any] = {"status": 500, "replayed": False}

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["replayed"] = any(
                    k.lower() == b"idempotent-replayed" for k, _ in message.get("headers", ())
                )
                if delay_s > 0:
                    await asyncio.sleep(delay_s)  # the injected latency, after the commit
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            route = getattr(scope.get("route"), "path", "*")
            REQUESTS.labels(
                self.name, method, route, outcome(seen["status"], seen["replayed"])
            ).inc()


def idempotency_key(
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
) -> str:
    """The request's ``Idempotency-Key`` header: required, 1 to 255 characters."""
    key = (idempotency_key or "").strip()
    if not key:
        raise HTTPException(400, "the Idempotency-Key header is required on every POST")
    if len(key) > MAX_KEY_LENGTH:
        raise HTTPException(400, f"the Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    return key


async def idempotent(
    db: Database, request: Request, key: str, body: Mapping[str, Any], act: Act
) -> JSONResponse:
    """``act`` done once for ``key``, answered as the first time it was asked."""
    answer = await once(db, key, fingerprint(request.method, request.url.path, body), act)
    return reply(answer)


def reply(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, answer.status, headers=headers)


def error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": message}


class FaultsIn(BaseModel):
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    down: bool | None = None
    down_for_s: float | None = Field(default=None, gt=0, le=86_400)


def build_app(
    name: str,
    db: Database,
    faults: Faults,
    *,
    admin_any_client: bool,
    max_body_bytes: int,
    install: Callable[[FastAPI, Callable[..., None]], None],
) -> FastAPI:
    """The stand-in's app; ``install`` adds its ``/v1`` routes (and admin routes, guarded
    by the dependency it is given)."""
    app = FastAPI(title=f"choreo {name} (a third-party stand-in)", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(FaultsAndCounts, name=name, faults=faults)
    instrument_app(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"error": validation_message(exc)}, 422)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, 500)

    def admin_only(request: Request) -> None:
        client = request.client.host if request.client else ""
        if not admin_any_client and client not in LOOPBACK:
            raise HTTPException(403, f"{name}'s /admin answers loopback clients only")

    admin = [Depends(admin_only)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            async with db.session() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            body = {"ready": False, "reasons": [f"the {name} database does not answer"]}
            return JSONResponse(body, 503)
        return JSONResponse({"ready": True, "checks": {"database": True}})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/faults", dependencies=admin)
    async def get_faults() -> dict[str, object]:
        return faults.view(time.monotonic())

    @app.put("/admin/faults", dependencies=admin)
    async def put_faults(body: FaultsIn) -> dict[str, object]:
        now = time.monotonic()
        faults.set(now, **body.model_dump())
        return faults.view(now)

    install(app, admin_only)
    return app


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one line, without echoing the input."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
