"""The query service's entrypoint: the ``query`` projection and its read API in one process.

The query service is a ``Service`` with no event handlers of its own: instead of a consumer
group it runs a ``ProjectionRunner`` (offsets kept in its database, beside its rows) next to
uvicorn, in the shape of ``events.service.serve``: settings read once here, SIGTERM stops
the projection first and then the API, within ``SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from sqlalchemy import MetaData, text

from events.http_input import install_input_guards
from events.projection import ProjectionRunner
from events.reading import tune_gc
from events.routing import Router
from events.service import (
    HttpServer,
    Service,
    ServiceContext,
    ServiceSettings,
    build_context,
    http_server,
)
from events.settings import load_settings
from events.tables import metadata as platform_metadata
from services.query import dashboard
from services.query.analytics_proxy import AnalyticsClient
from services.query.api import ReadSide, projection_state, routes
from services.query.projections import build_projection
from services.query.reads import NotStarted, Reads
from services.query.store import SQLITE_PAGE_SIZE, Reader, tune_sqlite

log = logging.getLogger(__name__)


class Settings(ServiceSettings):
    http_port: int = Field(default=8106, ge=0, le=65535, description="query HTTP port")
    projection_batch: int = Field(
        default=2000, ge=1, le=50_000, description="Max events per projection transaction"
    )
    projection_linger_ms: int = Field(
        default=200,
        ge=0,
        le=5_000,
        description="After a small batch, how long the projection waits for more events "
        "before its next transaction (fewer, larger transactions at low rates)",
    )
    analytics_url: str = Field(
        default="http://127.0.0.1:8107",
        pattern=r"^https?://\S+$",
        description="Analytics service whose windows the dashboard charts (proxied)",
    )
    trace_url_template: str = Field(
        default="http://localhost:16686/trace/{trace_id}",
        pattern=r"^$|\{trace_id\}",
        description="The dashboard's link to a trace, {trace_id} filled in; empty: no link",
    )


def api(ctx: ServiceContext) -> APIRouter:
    side: ReadSide = ctx.extras["read_side"]
    return routes(side)


# The projection writes batches of thousands of rows in a few statements: SQLite works in
# aiosqlite's thread meanwhile, so the API keeps answering reads on the loop. Its pages are
# sized as the replay command's (``store.SQLITE_PAGE_SIZE``).
SERVICE = Service(
    name="query",
    metadata=MetaData(),
    router=Router(),
    topics=[],
    api=api,
    single_connection=False,
    sqlite_page_size=SQLITE_PAGE_SIZE,
)


def build_side(ctx: ServiceContext, settings: Settings) -> ReadSide:
    """The runner over this environment's topics and the reads beside it."""
    projection = build_projection(settings.topic_prefix)
    runner = ProjectionRunner(
        projection,
        ctx.db,
        ctx.codec,
        settings.kafka_bootstrap_servers,
        batch=settings.projection_batch,
        linger_s=settings.projection_linger_ms / 1000,
    )
    side = ReadSide(runner, Reads(runner.store, Reader(ctx.db.url)))
    ctx.extras["read_side"] = side
    return side


def build_app(ctx: ServiceContext) -> FastAPI:
    side: ReadSide = ctx.extras["read_side"]
    app = FastAPI(
        title="choreo query",
        version="1",
        description="Read models of the order saga, kept from its events (CQRS).",
        # A trailing slash is a 404 like any unknown path, not a redirect without a body.
        redirect_slashes=False,
    )
    install_input_guards(app)  # 413 for huge bodies; a 422 whatever the input was

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "query"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Ready once the projection runs and has caught up with every partition."""
        checks: dict[str, object] = {"database": False}
        with contextlib.suppress(Exception):
            async with side.reads.reader.session() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = True
        state = await projection_state(side) if checks["database"] else None
        checks["projection_started"] = side.runner.started.is_set()
        checks["caught_up"] = bool(state and state["caught_up"])
        checks["lag"] = state["lag"] if state else None
        # A runner that cannot apply what it reads says why, and since when.
        checks["advancing"] = side.runner.stalled_since is None
        checks["last_error"] = side.runner.last_error
        checks["stalled_since"] = side.runner.stalled_since
        ok = bool(
            checks["database"]
            and checks["projection_started"]
            and checks["caught_up"]
            and checks["advancing"]
        )
        body: dict[str, object] = {"ready": ok, "checks": checks}
        if not ok:  # in words, for `choreo status` and whoever reads the probe
            body["reasons"] = _not_ready_reasons(checks)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Includes the projection's dead-lettered and undecodable counts (from its database).
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(NotStarted)
    async def not_started(_: Request, exc: NotStarted) -> JSONResponse:
        return JSONResponse({"detail": "the projection is starting; retry shortly"}, 503)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        # Client mistakes are 4xx before they get here; this is a fault of the service.
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, 500)

    app.include_router(api(ctx), prefix="/api/v1")
    settings = cast(Settings, ctx.settings)  # build_context was given the query's settings
    analytics = ctx.extras["analytics"] = AnalyticsClient(settings.analytics_url)
    app.include_router(dashboard.routes(analytics, trace_url_template=settings.trace_url_template))
    return app


async def _feed(runner: ProjectionRunner, stop: asyncio.Event) -> None:
    """Starts the runner (the broker or the topics may not be there yet) and runs it."""
    delay = 0.2
    while not stop.is_set():
        try:
            await runner.start()
            break
        except Exception as exc:
            log.warning("query: cannot start the projection yet (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 5.0)
    else:
        return
    await runner.run(stop)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT (or until ``stop`` is set, when given)."""
    ctx = build_context(SERVICE, settings)
    tune_sqlite(ctx.db)
    await ctx.db.create_all(platform_metadata)
    side = build_side(ctx, settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    tasks = [asyncio.create_task(_feed(side.runner, stop), name="projection")]
    server: HttpServer | None = None
    if settings.http_port:
        server = http_server(build_app(ctx), settings)
        tasks.append(asyncio.create_task(server.serve(), name="http"))
    log.info("query started (http port %s)", settings.http_port or "none")

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    stop.set()
    stopper.cancel()
    if server is not None:
        server.should_exit = True
    try:
        async with asyncio.timeout(settings.shutdown_timeout_s):
            await asyncio.gather(*tasks, return_exceptions=True)
    except TimeoutError:
        log.error("query: shutdown took longer than %.0fs", settings.shutdown_timeout_s)
    await side.reads.reader.dispose()
    if "analytics" in ctx.extras:
        await ctx.extras["analytics"].aclose()
    await ctx.db.dispose()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    log.info("query stopped")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s query %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = load_settings("query", Settings)
    tune_gc()
    asyncio.run(serve(settings))


def _not_ready_reasons(checks: dict[str, object]) -> list[str]:
    if not checks["database"]:
        return ["the query database does not answer"]
    if not checks["projection_started"]:
        return ["the projection is starting"]
    reasons = []
    if not checks["advancing"]:
        reasons.append(
            f"the projection cannot advance since {checks['stalled_since']}: {checks['last_error']}"
        )
    if not checks["caught_up"]:
        reasons.append(f"the projection is catching up (lag {checks['lag']})")
    return reasons
