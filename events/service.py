"""Running a service: its database and the components it declares (outbox relay,
idempotent consumer, projection runners, background tasks) and its HTTP API, in one process
started from settings built once at the entrypoint and stopped on SIGTERM within
``SHUTDOWN_TIMEOUT_S`` (``events.components``). Every service, read side included, gets the
same logs, tracing, ``/health``, ``/ready`` and ``/metrics`` from here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from sqlalchemy import MetaData, text

from events.auth import (
    OPERATOR_READ,
    Authenticator,
    AuthSettings,
    authenticated,
    requires,
    warn_if_open,
)
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.components import (
    Component,
    HttpServer,
    Readiness,
    http_component,
    run_components,
    uvicorn_server,
)
from events.consumer import EventConsumer
from events.db import Database, sqlite_url
from events.dependency import Dependency
from events.encoding import make_codec
from events.http_input import MAX_BODY_BYTES, install_input_guards
from events.http_limits import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_MAX_CONCURRENT,
    AllowedHosts,
    install_http_limits,
)
from events.kafka import KafkaConnection
from events.kafka_auth import EXIT_REFUSED, KafkaRefused
from events.outbox import EventTooLarge, Outbox, UnitOfWork
from events.process import ProcessSettings, observed
from events.relay import OutboxRelay, RelayConfig
from events.routing import Router
from events.schema_registry import RegistryError, RegistryUnavailable
from events.settings import load_settings
from events.tables import metadata as platform_metadata
from events.telemetry import instrument_app

log = logging.getLogger(__name__)

__all__ = [
    "Component",
    "HttpServer",
    "Readiness",
    "Service",
    "ServiceContext",
    "ServiceSettings",
    "build_app",
    "build_context",
    "http_server",
    "prepare",
    "run",
    "serve",
]


class ServiceSettings(ProcessSettings, AuthSettings):
    database_url: str = Field(default="", description="SQLAlchemy URL; default var/<service>.db")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds")
    http_port: int = Field(default=0, ge=0, le=65535, description="HTTP port (0: none)")
    consumer_batch: int = Field(default=500, ge=1, le=10000, description="Max events per batch")
    outbox_retention_hours: float = Field(
        default=168, ge=0, description="How long sent outbox rows are kept before purging"
    )
    relay_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="/ready fails when outbox rows wait and none was published for this long",
    )
    http_max_body_bytes: int = Field(
        default=MAX_BODY_BYTES,
        ge=1024,
        description="Largest HTTP request body; a larger one is a 413, refused unparsed",
    )
    allowed_hosts: AllowedHosts = Field(
        default=DEFAULT_ALLOWED_HOSTS,
        description="Host names the HTTP API answers for, comma-separated (*.example.com: "
        "any subdomain; *: any); another Host header is a 400",
    )
    http_max_concurrent: int = Field(
        default=DEFAULT_MAX_CONCURRENT,
        ge=1,
        description="HTTP requests in progress at once; beyond it a 503 with Retry-After "
        "(/health and /ready exempt)",
    )

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(self.var_dir / f"{service}.db")


@dataclass
class ServiceContext:
    """What handlers' neighbours (HTTP routes, components) need: built once per process."""

    name: str
    settings: ServiceSettings
    db: Database
    codec: AvroCodec
    outbox: Outbox
    relay: OutboxRelay
    kafka: KafkaConnection  # how every Kafka client of this process connects
    consumer: EventConsumer | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, self.outbox)


ComponentFactory = Callable[[ServiceContext], Component]
"""Builds a component from the service's context (a watchdog, a projection runner); it
may leave what the API needs in ``ctx.extras``."""


@dataclass
class Service:
    """A service's description: no client or connection exists until it is served."""

    name: str
    metadata: MetaData
    router: Router = field(default_factory=Router)
    topics: list[str] = field(default_factory=list)
    api: Callable[[ServiceContext], APIRouter] | None = None
    components: list[ComponentFactory] = field(default_factory=list)
    relay: bool = True  # False: the service emits no events, so no relay runs
    # How it opens its database from the URL (page sizes, pools, connection settings).
    database: Callable[[str], Database] = Database
    # What the app serves beyond /health, /ready, /metrics and the api under /api/v1
    # (pages, exception handlers of its own).
    http: Callable[[FastAPI, ServiceContext], None] | None = None
    # How /ready asks whether the database answers (default: SELECT 1 on its engine).
    probe: Callable[[ServiceContext], Awaitable[None]] | None = None
    description: str = ""
    # External systems its handlers call (events.dependency): closed at shutdown, their
    # breakers' states in /health. Their clients are made by the first call.
    dependencies: list[Dependency] = field(default_factory=list)


def build_context(service: Service, settings: ServiceSettings) -> ServiceContext:
    codec = make_codec(
        Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix),
        settings.schema_encoding(),
    )
    db = service.database(settings.database_url_for(service.name))
    outbox = Outbox(codec, service.name, max_event_bytes=settings.max_event_bytes)
    kafka = settings.kafka_connection()
    relay = OutboxRelay(
        db,
        kafka,
        client_id=f"{service.name}-relay",
        config=RelayConfig(retention=timedelta(hours=settings.outbox_retention_hours)),
        known_topics=codec.catalogue.topics,
    )
    outbox.on_commit(relay.notify)
    ctx = ServiceContext(service.name, settings, db, codec, outbox, relay, kafka)
    if service.router.handlers:
        ctx.consumer = EventConsumer(
            name=settings.topic_prefix + service.name,
            topics=[settings.topic_prefix + t for t in service.topics],
            router=service.router,
            db=db,
            codec=codec,
            outbox=outbox,
            kafka=kafka,
            max_batch=settings.consumer_batch,
        )
    return ctx


def build_components(service: Service, ctx: ServiceContext) -> list[Component]:
    """The relay, the consumer and the service's own components, in ``ctx.components``."""
    components: list[Component] = []
    if service.relay:
        components.append(Component("relay", run=ctx.relay.run))
    if ctx.consumer is not None:
        components.append(_consumer_component(ctx.consumer))
    components.extend(make(ctx) for make in service.components)
    components.extend(
        Component(f"dependency {d.name}", close=d.close) for d in service.dependencies
    )
    ctx.components = components
    return components


def _consumer_component(consumer: EventConsumer) -> Component:
    async def start() -> None:
        try:
            await consumer.start()
        except BaseException:
            await consumer.close()  # the next attempt starts clean
            raise

    return Component("consumer", start=start, run=consumer.run)


async def prepare(service: Service, settings: ServiceSettings) -> ServiceContext:
    """The service's context with its tables created and its components built."""
    ctx = build_context(service, settings)
    await ctx.db.create_all(platform_metadata, service.metadata)
    build_components(service, ctx)
    return ctx


def build_app(service: Service, ctx: ServiceContext) -> FastAPI:
    # The schema is operator-only (below) and Swagger UI cannot send a bearer token to
    # fetch it, so there is no /docs page: load /openapi.json into any viewer instead.
    app = FastAPI(
        title=f"choreo {service.name}",
        version="1",
        description=service.description,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.auth = Authenticator.from_settings(ctx.settings)
    operator = [Depends(requires(OPERATOR_READ))]
    settings = ctx.settings
    install_input_guards(app, settings.http_max_body_bytes)  # 413 unparsed; a 422 always
    install_http_limits(  # Host checked (400), requests in progress capped (503)
        app, allowed_hosts=settings.allowed_hosts, max_concurrent=settings.http_max_concurrent
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok", "service": service.name}
        if service.dependencies:  # each breaker's state: closed, half-open or open
            body["dependencies"] = {d.name: d.state for d in service.dependencies}
        return body

    @app.get("/ready")
    async def ready() -> JSONResponse:
        state = await readiness(service, ctx)
        body: dict[str, Any] = {"ready": state.ok, "checks": state.checks}
        if state.reasons:
            body["reasons"] = state.reasons
        return JSONResponse(body, status_code=200 if state.ok else 503)

    @app.exception_handler(EventTooLarge)
    async def event_too_large(request: Request, exc: EventTooLarge) -> JSONResponse:
        # The request's content would make an event Kafka refuses: the client's to shrink.
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        # Client mistakes are 4xx before they get here; this is a fault of the service.
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, 500)

    @app.get("/metrics", include_in_schema=False, dependencies=operator)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False, dependencies=operator)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    if service.api is not None:
        # Every /api/v1 route needs a valid token; each route also names its scopes.
        api = service.api(ctx)
        app.include_router(api, prefix="/api/v1", dependencies=[Depends(authenticated)])
    if service.http is not None:
        service.http(app, ctx)
    # A server span per request (probes and scrapes aside) continuing the client's
    # traceparent: an order placed inside a caller's trace is part of it.
    instrument_app(app)
    return app


async def readiness(service: Service, ctx: ServiceContext) -> Readiness:
    """The database answers, the consumer is in its group (partitions or none), the relay
    keeps up, and every component that has a say is ready: the instance can serve."""
    state = Readiness(ok=True, checks={"database": False})
    with contextlib.suppress(Exception):
        await (service.probe or _select_one)(ctx)
        state.checks["database"] = True
    if not state.checks["database"]:
        state.ok = False
        state.reasons.append(f"the {service.name} database does not answer")
    if ctx.consumer is not None:
        # In the group is enough: with more instances than partitions some hold none and
        # still serve their API, and take partitions over when another instance goes.
        joined = ctx.consumer.joined
        state.checks["consumer"] = joined
        state.checks["partitions"] = len(ctx.consumer.assignment)
        if not joined:
            state.ok = False
            state.reasons.append(f"the {service.name} consumer has not joined its group yet")
    if service.relay:
        stalled = ctx.relay.stall_reason(ctx.settings.relay_stall_s)
        state.checks["outbox"] = stalled is None
        if stalled is not None:
            state.ok = False
            state.reasons.append(stalled)
    for component in ctx.components:
        if component.ready is not None:
            part = await component.ready()
            state.checks.update(part.checks)
            state.ok = state.ok and part.ok
            state.reasons.extend(part.reasons)
    return state


async def _select_one(ctx: ServiceContext) -> None:
    async with ctx.db.session() as session:
        await session.execute(text("SELECT 1"))


def http_server(app: FastAPI, settings: ServiceSettings) -> HttpServer:
    """uvicorn for a service's API on its settings' host and port (not yet serving)."""
    return uvicorn_server(app, settings.http_host, settings.http_port)


async def serve(
    service: Service, settings: ServiceSettings, *, stop: asyncio.Event | None = None
) -> None:
    """Runs the service until SIGTERM/SIGINT (or until ``stop`` is set, when given)."""
    ctx = await prepare(service, settings)
    try:
        components = list(ctx.components)
        if settings.http_port:
            app = build_app(service, ctx)
            components.append(http_component(app, settings.http_host, settings.http_port))
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        warn_if_open(service.name, settings)
        log.info("%s started (http port %s)", service.name, settings.http_port or "none")
        await run_components(service.name, components, stop, settings.shutdown_timeout_s)
    finally:
        await ctx.db.dispose()
    log.info("%s stopped", service.name)


S = TypeVar("S", bound=ServiceSettings)


def run(service: Service | Callable[[S], Service], settings_cls: type[S]) -> None:
    """A service's console entrypoint: settings are read once, here, then passed in; logs
    and tracing are set up before anything else runs.

    ``service`` is the Service, or a function building it from the settings (for services
    whose handlers or components need configuration).
    """
    name = service.name if isinstance(service, Service) else settings_cls.__module__.split(".")[1]
    settings = load_settings(name, settings_cls)
    try:
        with observed(name, settings):
            built = service if isinstance(service, Service) else service(settings)
            asyncio.run(serve(built, settings))
    except KafkaRefused as exc:
        # Last on stderr: `choreo up` shows a service's last log line as why it exited.
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED) from None
    except (RegistryError, RegistryUnavailable) as exc:
        # SCHEMA_FORMAT=registry and the schemas' ids cannot be had (not registered: the
        # line names `choreo schemas release`; or the registry is down): one line, exit 1.
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
