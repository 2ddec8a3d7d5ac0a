"""Running a service: its database, outbox relay, idempotent consumer and HTTP API in one
process, started from settings built once at the entrypoint, stopped cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from sqlalchemy import MetaData, text

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.consumer import EventConsumer
from events.db import Database, sqlite_url
from events.http_input import install_input_guards
from events.logs import configure_logging, json_logs_wanted
from events.outbox import EventTooLarge, Outbox, UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from events.routing import Router
from events.settings import PlatformSettings, load_settings
from events.tables import metadata as platform_metadata
from events.telemetry import setup_tracing

log = logging.getLogger(__name__)


class ServiceSettings(PlatformSettings):
    database_url: str = Field(default="", description="SQLAlchemy URL; default var/<service>.db")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds")
    http_port: int = Field(default=0, ge=0, le=65535, description="HTTP port (0: none)")
    consumer_batch: int = Field(default=500, ge=1, le=10000, description="Max events per batch")
    outbox_retention_hours: float = Field(
        default=168, ge=0, description="How long sent outbox rows are kept before purging"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    trace_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where spans go (otlp: OTEL endpoint, e.g. Jaeger)"
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP traces URL, e.g. http://jaeger:4318/v1/traces"
    )
    shutdown_timeout_s: float = Field(default=20.0, gt=0, description="Bound on graceful stop")
    relay_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="/ready fails when outbox rows wait and none was published for this long",
    )

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(self.var_dir / f"{service}.db")


@dataclass
class ServiceContext:
    """What handlers' neighbours (HTTP routes, seeding) need: built once per process."""

    name: str
    settings: ServiceSettings
    db: Database
    codec: AvroCodec
    outbox: Outbox
    relay: OutboxRelay
    consumer: EventConsumer | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, self.outbox)


Background = Callable[[ServiceContext, asyncio.Event], Coroutine[Any, Any, None]]
"""A task a service runs beside its consumer and relay (a watchdog, a scheduler): given the
context and the stop event, it returns soon after the event is set."""


@dataclass
class Service:
    name: str
    metadata: MetaData
    router: Router
    topics: list[str]
    api: Callable[[ServiceContext], APIRouter] | None = None
    background: list[Background] = field(default_factory=list)
    single_connection: bool = True  # see events.db.make_engine
    sqlite_page_size: int | None = None  # for its database file when created (make_engine)


def build_context(service: Service, settings: ServiceSettings) -> ServiceContext:
    codec = AvroCodec(Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix))
    db = Database(
        settings.database_url_for(service.name),
        single_connection=service.single_connection,
        page_size=service.sqlite_page_size,
    )
    outbox = Outbox(codec, service.name, max_event_bytes=settings.max_event_bytes)
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap_servers,
        client_id=f"{service.name}-relay",
        config=RelayConfig(retention=timedelta(hours=settings.outbox_retention_hours)),
        known_topics=codec.catalogue.topics,
    )
    outbox.on_commit(relay.notify)
    ctx = ServiceContext(service.name, settings, db, codec, outbox, relay)
    if service.router.handlers:
        ctx.consumer = EventConsumer(
            name=settings.topic_prefix + service.name,
            topics=[settings.topic_prefix + t for t in service.topics],
            router=service.router,
            db=db,
            codec=codec,
            outbox=outbox,
            bootstrap=settings.kafka_bootstrap_servers,
            max_batch=settings.consumer_batch,
        )
    return ctx


def build_app(service: Service, ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title=f"choreo {service.name}", version="1")
    install_input_guards(app)  # 413 for huge bodies; a 422 whatever the input was

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": service.name}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        checks = {"database": False, "consumer": ctx.consumer is None}
        with contextlib.suppress(Exception):
            async with ctx.db.session() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = True
        if ctx.consumer is not None:
            checks["consumer"] = bool(ctx.consumer.assignment)
        reasons: list[str] = []
        stalled = ctx.relay.stall_reason(ctx.settings.relay_stall_s)
        checks["outbox"] = stalled is None
        if stalled is not None:
            reasons.append(stalled)
        ok = all(checks.values())
        body: dict[str, Any] = {"ready": ok, "checks": checks}
        if reasons:
            body["reasons"] = reasons
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.exception_handler(EventTooLarge)
    async def event_too_large(request: Request, exc: EventTooLarge) -> JSONResponse:
        # The request's content would make an event Kafka refuses: the client's to shrink.
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if service.api is not None:
        app.include_router(service.api(ctx), prefix="/api/v1")
    return app


class HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service owns SIGTERM/SIGINT: it stops consuming before the API goes away.
        yield


def http_server(app: FastAPI, settings: ServiceSettings) -> HttpServer:
    """uvicorn for a service's API; the service runs ``serve()`` as one of its tasks."""
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return HttpServer(config)


async def serve(service: Service, settings: ServiceSettings) -> None:
    ctx = build_context(service, settings)
    await ctx.db.create_all(platform_metadata, service.metadata)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks = [asyncio.create_task(ctx.relay.run(stop), name="relay")]
    if ctx.consumer is not None:
        await _start_with_retry(ctx.consumer, stop)
        tasks.append(asyncio.create_task(ctx.consumer.run(stop), name="consumer"))
    for i, job in enumerate(service.background):
        tasks.append(asyncio.create_task(job(ctx, stop), name=f"background-{i}"))
    server: HttpServer | None = None
    if settings.http_port:
        server = http_server(build_app(service, ctx), settings)
        tasks.append(asyncio.create_task(server.serve(), name="http"))
    log.info("%s started (http port %s)", service.name, settings.http_port or "none")

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    stop.set()
    if server is not None:
        server.should_exit = True
    try:
        async with asyncio.timeout(settings.shutdown_timeout_s):
            await asyncio.gather(*tasks, return_exceptions=True)
    except TimeoutError:
        log.error("%s: shutdown took longer than %.0fs", service.name, settings.shutdown_timeout_s)
    await ctx.db.dispose()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    log.info("%s stopped", service.name)


async def _start_with_retry(consumer: EventConsumer, stop: asyncio.Event) -> None:
    """The broker may still be starting: retry, bounded by the stop signal."""
    delay = 0.2
    while True:
        try:
            await consumer.start()
            return
        except Exception as exc:
            await consumer.close()
            if stop.is_set():
                raise
            log.warning("%s: cannot reach Kafka yet (%s); retrying", consumer.name, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, 5.0)


S = TypeVar("S", bound=ServiceSettings)


def run(service: Service | Callable[[S], Service], settings_cls: type[S]) -> None:
    """A service's console entrypoint: settings are read once, here, then passed in.

    ``service`` is the Service, or a function building it from the settings (for services
    whose handlers need configuration).
    """
    name = service.name if isinstance(service, Service) else settings_cls.__module__.split(".")[1]
    settings = load_settings(name, settings_cls)
    configure_logging(name, json=json_logs_wanted(settings.log_format), level=settings.log_level)
    provider = setup_tracing(name, settings.trace_exporter, settings.otlp_endpoint or None)
    built = service if isinstance(service, Service) else service(settings)
    try:
        asyncio.run(serve(built, settings))
    finally:
        if provider is not None:
            provider.shutdown()  # flush the spans still buffered
