"""The query service's entrypoint: the ``query`` projection and its read API in one process.

An ordinary ``Service`` (``events.service``) with no event handlers and no outbox: its
components are a ``ProjectionRunner`` (offsets kept in its database, beside its rows) and
the client of the analytics service the dashboard charts. It gets the platform's logs,
tracing (a handling span per projected event), ``/metrics``, start-up retry and SIGTERM
path; its ``/ready`` adds whether the projection has started, advances and keeps its lag
under ``READY_MAX_LAG``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator
from sqlalchemy import MetaData, text

from events.components import Component, Readiness
from events.projection import ProjectionRunner
from events.reading import tune_gc
from events.service import Service, ServiceContext, ServiceSettings, run
from services.query import breakers, dashboard
from services.query.analytics_proxy import AnalyticsClient
from services.query.api import ReadSide, projection_state, routes
from services.query.projections import build_projection
from services.query.reads import NotStarted, Reads
from services.query.store import Reader, open_database

NAME = "query"


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
    ready_max_lag: int = Field(
        default=10_000,
        ge=0,
        description="/ready holds while the projection's lag (events not applied yet, all "
        "partitions) stays at or under this; 0: ready only when caught up",
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
    dependency_health_urls: str = Field(
        default="payments=http://127.0.0.1:8103,shipping=http://127.0.0.1:8104",
        description="Services whose /health the dashboard reads for their external systems' "
        "circuit breakers, as name=url pairs separated by commas (one per instance)",
    )

    @field_validator("dependency_health_urls")
    @classmethod
    def _pairs(cls, value: str) -> str:
        breakers.parse_targets(value)  # a ValueError names the bad pair
        return value


def build_service(settings: Settings) -> Service:
    """The query service over this environment's topics (``TOPIC_PREFIX``)."""

    def projection(ctx: ServiceContext) -> Component:
        runner = ProjectionRunner(
            build_projection(settings.topic_prefix),
            ctx.db,
            ctx.codec,
            ctx.kafka,
            batch=settings.projection_batch,
            linger_s=settings.projection_linger_ms / 1000,
        )
        side = ctx.extras["read_side"] = ReadSide(runner, Reads(runner.store, Reader(ctx.db.url)))
        return Component(
            "projection",
            start=runner.start,  # it closes what it opened when it fails
            run=runner.run,
            close=side.reads.reader.dispose,
            ready=lambda: _projection_ready(side, settings.ready_max_lag),
        )

    def analytics(ctx: ServiceContext) -> Component:
        client = ctx.extras["analytics"] = AnalyticsClient(settings.analytics_url)
        return Component("analytics client", close=client.aclose)

    def breaker_watch(ctx: ServiceContext) -> Component:
        watch = ctx.extras["breakers"] = breakers.BreakerWatch(
            breakers.parse_targets(settings.dependency_health_urls)
        )
        return Component("breaker watch", close=watch.aclose)

    def pages(app: FastAPI, ctx: ServiceContext) -> None:
        # A trailing slash is a 404 like any unknown path, not a redirect without a body.
        app.router.redirect_slashes = False
        app.add_exception_handler(NotStarted, _not_started)
        trace_url = settings.trace_url_template
        app.include_router(dashboard.routes(ctx.extras["analytics"], trace_url_template=trace_url))
        app.include_router(breakers.routes(ctx.extras["breakers"]), prefix="/api/v1")

    # The projection writes batches of thousands of rows in a few statements: its database
    # keeps a pool (SQLite works in aiosqlite's threads meanwhile), so the API keeps
    # answering reads on the loop through its own read-only connections.
    return Service(
        name=NAME,
        metadata=MetaData(),
        api=api,
        components=[projection, analytics, breaker_watch],
        relay=False,
        database=open_database,
        http=pages,
        probe=_reader_answers,
        description="Read models of the order saga, kept from its events (CQRS).",
    )


def api(ctx: ServiceContext) -> APIRouter:
    side: ReadSide = ctx.extras["read_side"]
    return routes(side)


async def _reader_answers(ctx: ServiceContext) -> None:
    side: ReadSide = ctx.extras["read_side"]
    async with side.reads.reader.session() as session:
        await session.execute(text("SELECT 1"))


async def _not_started(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "the projection is starting; retry shortly"}, 503)


async def _projection_ready(side: ReadSide, max_lag: int) -> Readiness:
    """Ready while the projection runs, advances and its lag stays within ``max_lag``: a
    busy read side keeps its place behind a load balancer (reads that must see a write
    pass ``min_position``); a runner that cannot apply what it reads says why, and since
    when."""
    runner = side.runner
    try:
        state = await projection_state(side)
    except Exception:
        state = None  # the database does not answer: its own check says so
    return projection_readiness(
        started=runner.started.is_set(),
        lag=state["lag"] if state else None,
        caught_up=bool(state and state["caught_up"]),
        stalled_since=runner.stalled_since,
        last_error=runner.last_error,
        max_lag=max_lag,
        answered=state is not None,
    )


def projection_readiness(
    *,
    started: bool,
    lag: int | None,
    caught_up: bool,
    stalled_since: str | None,
    last_error: str | None,
    max_lag: int,
    answered: bool = True,
) -> Readiness:
    """The projection's part of ``/ready`` from what the runner knows. A lag not known yet
    (the partitions' ends not read) is not within the bound."""
    within = lag is not None and lag <= max_lag
    checks: dict[str, object] = {
        "projection_started": started,
        "caught_up": caught_up,
        "lag": lag,
        "max_lag": max_lag,
        "lag_within_bound": within,
        "advancing": stalled_since is None,
        "last_error": last_error,
        "stalled_since": stalled_since,
    }
    ok = answered and started and within and stalled_since is None
    reasons: list[str] = []
    if not answered:
        pass
    elif not started:
        reasons.append("the projection is starting")
    else:
        if stalled_since is not None:
            reasons.append(f"the projection cannot advance since {stalled_since}: {last_error}")
        if not within:
            shown = "not known yet" if lag is None else lag
            reasons.append(f"the projection is catching up (lag {shown}, ready at {max_lag})")
    return Readiness(ok, checks, reasons)


def main() -> None:
    tune_gc()  # a process that applies events in batches of thousands
    run(build_service, Settings)
