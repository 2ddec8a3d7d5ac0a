"""The dashboard's routes in the query app: the page and its assets, its config, and the
analytics proxy against a stub analytics server on a real socket (503 when it is down or
failing, 502 when it answers nonsense, 422 for bad parameters; never 500).

No broker is needed: these routes do not touch the projection."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Generator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from events.auth import Authenticator, AuthSettings
from events.components import close_components
from events.service import build_app, prepare
from infra.broker import free_port
from services.query import analytics_proxy
from services.query.analytics_proxy import AnalyticsClient
from services.query.app import Settings, build_service
from tests.support import eventually
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration

WINDOW = {
    "start": "2025-03-01T12:00:00Z",
    "end": "2025-03-01T12:01:00Z",
    "placed": 5,
    "completed": 3,
    "rejected": 1,
    "cancelled": 1,
    "captured_cents": 4500,
    "refunded_cents": 1500,
    "failure_reasons": {"insufficient funds": 1},
    "duration_ms": {"count": 4, "p50": 120.0, "p90": 300.5, "p99": None},
}
BODY = {"window": "hour", "size_s": 3600, "windows": [WINDOW]}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # leave pytest's signal handlers alone


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, deadline_s=10, what="the stub server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Stub:
    """A stand-in analytics service whose answer each test chooses."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.seen: list[dict[str, str]] = []
        self.released = asyncio.Event()  # a slow answer waits for it: past any client timeout
        self.app = FastAPI()

        @self.app.get("/api/v1/analytics")
        async def analytics(request: Request) -> Response:
            self.seen.append(dict(request.query_params))
            if self.mode == "slow":
                await self.released.wait()
            if self.mode == "error":
                return JSONResponse({"detail": "boom"}, 500)
            if self.mode == "garbage":
                return PlainTextResponse("<html>not json</html>")
            if self.mode == "wrong shape":
                return JSONResponse({"window": "minute", "windows": [{"start": "x"}]})
            return JSONResponse(BODY)


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    s = Stub()
    async with serving(s.app) as url:
        try:
            yield s, url
        finally:
            s.released.set()  # slow answers end, so the server can stop


async def test_page_assets_and_config_are_served(database_url):
    template = "https://traces.example/t/{trace_id}?x=1"
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url=database_url("dash"),
        http_port=0,
        trace_url_template=template,
    )
    async with open_app(settings) as http:
        r = await http.get("/")
        assert r.status_code == 307 and r.headers["location"] == "/dashboard"
        page = await http.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for testid in ("counts", "analytics", "recent-orders", "stuck-orders", "order-detail"):
            assert f'data-testid="{testid}"' in page.text
        assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text)
        assert len(assets) >= 3
        for path in [*assets, "/dashboard/static/charts.js"]:
            a = await http.get(path)
            assert a.status_code == 200, path
            kind = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
            assert a.headers["content-type"].startswith(kind[path.rsplit(".", 1)[1]]), path
        for bad in ("/dashboard/static/nope.js", "/dashboard/static/..%2Fapp.py"):
            r = await http.get(bad)
            assert r.status_code == 404 and "detail" in r.json(), bad
        config = (await http.get("/dashboard/config")).json()
        assert config == {"trace_url_template": template, "poll_ms": 2000}
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/api/v1/analytics" in paths and "/dashboard/config" in paths


async def test_the_proxy_passes_the_windows_through(database_url, stub):
    s, url = stub
    async with open_app(_settings(database_url, url)) as http:
        r = await http.get("/api/v1/analytics", params={"window": "hour", "limit": 24})
        assert r.status_code == 200, r.text
        assert r.json() == BODY
        assert s.seen == [{"window": "hour", "limit": "24"}]
        r = await http.get("/api/v1/analytics")  # defaults
        assert r.status_code == 200 and s.seen[-1] == {"window": "minute", "limit": "60"}


@pytest.mark.parametrize(
    "params",
    [
        {"window": "day"},
        {"window": ""},
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "100000"},
        {"limit": "-1"},
    ],
)
async def test_bad_parameters_are_422_and_never_reach_analytics(database_url, stub, params):
    s, url = stub
    async with open_app(_settings(database_url, url)) as http:
        r = await http.get("/api/v1/analytics", params=params)
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], list)
        assert s.seen == []


async def test_analytics_down_is_503_quickly(database_url):
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with open_app(_settings(database_url, nobody)) as http:
        started = time.monotonic()
        r = await http.get("/api/v1/analytics", params={"window": "minute", "limit": 5})
        assert time.monotonic() - started < 2.5
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert detail.startswith("analytics unavailable: "), detail


@pytest.mark.parametrize(
    ("mode", "status", "detail"),
    [
        ("error", 503, "analytics unavailable: it answered HTTP 500"),
        ("garbage", 502, "analytics answered an unexpected body"),
        ("wrong shape", 502, "analytics answered an unexpected body"),
    ],
)
async def test_a_failing_analytics_is_reported_not_a_500(database_url, stub, mode, status, detail):
    s, url = stub
    s.mode = mode
    async with open_app(_settings(database_url, url)) as http:
        r = await http.get("/api/v1/analytics")
        assert r.status_code == status, r.text
        assert r.json()["detail"].startswith(detail)


async def test_a_slow_analytics_is_503_within_the_timeout(stub):
    s, url = stub
    s.mode = "slow"
    client = AnalyticsClient(url, timeout_s=0.3)
    app = FastAPI()
    app.state.auth = Authenticator.from_settings(AuthSettings())  # as build_app does
    app.include_router(analytics_proxy.routes(client), prefix="/api/v1")
    transport = httpx.ASGITransport(app=app)
    try:
        headers = operator_headers()
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as http:
            started = time.monotonic()
            r = await http.get("/api/v1/analytics")
            assert time.monotonic() - started < 2
            assert r.status_code == 503
            assert r.json() == {"detail": "analytics unavailable: no answer in time"}
            s.mode = "ok"  # and it recovers on the next poll
            assert (await http.get("/api/v1/analytics")).status_code == 200
    finally:
        await client.aclose()


def test_settings_refuse_a_template_without_the_trace_id():
    with pytest.raises(ValueError, match="trace_url_template"):
        Settings(trace_url_template="http://jaeger/trace/")
    with pytest.raises(ValueError, match="analytics_url"):
        Settings(analytics_url="analytics:8107")
    assert Settings(trace_url_template="").trace_url_template == ""


# --- helpers ----------------------------------------------------------------------------------


def _settings(database_url: Callable[[str], str], analytics_url: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url=database_url("dash"),
        http_port=0,
        analytics_url=analytics_url,
    )


@contextlib.asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The query app in-process (broker unreachable: the dashboard routes do not need it)."""
    service = build_service(settings)
    ctx = await prepare(service, settings)
    app = build_app(service, ctx)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        headers = operator_headers()
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as http:
            yield http
    finally:
        await close_components("query", ctx.components)  # the analytics client, the reader
        await ctx.db.dispose()
