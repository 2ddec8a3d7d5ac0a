"""A stand-in's process: settings read once at the entrypoint, its database, its HTTP API
until SIGTERM (the platform's component loop, with the HTTP server as the one component)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import FastAPI
from pydantic import Field
from sqlalchemy import MetaData

from events.components import http_component, run_components
from events.db import Database, sqlite_url
from events.http_input import MAX_BODY_BYTES
from events.process import ProcessSettings, observed
from events.settings import load_settings
from services.standin import idempotency
from services.standin.faults import Faults
from services.standin.http import build_app

log = logging.getLogger(__name__)


class StandInSettings(ProcessSettings):
    """Its Kafka settings (inherited) go unused: a third party knows nothing of the log."""

    database_url: str = Field(default="", description="SQLAlchemy URL; default var/<name>.db")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds")
    http_port: int = Field(default=0, ge=0, le=65535, description="HTTP port")
    http_max_body_bytes: int = Field(
        default=MAX_BODY_BYTES, ge=1024, description="Largest HTTP request body (else 413)"
    )
    admin_any_client: bool = Field(
        default=False,
        description="Let /admin/faults answer clients beyond loopback (a compose network)",
    )

    def database_url_for(self, name: str) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(self.var_dir / f"{name}.db")


Install = Callable[[FastAPI, Database, Callable[..., None]], None]
"""Adds the stand-in's routes to its app: given the app, its database and the dependency
that keeps a route to loopback clients (for its own admin routes)."""


@dataclass
class StandIn:
    name: str
    metadata: MetaData
    install: Install
    faults: Faults = field(default_factory=Faults)


async def serve(
    standin: StandIn, settings: StandInSettings, *, stop: asyncio.Event | None = None
) -> None:
    db = Database(settings.database_url_for(standin.name))
    try:
        await db.create_all(idempotency.metadata, standin.metadata)
        app = build_app(
            standin.name,
            db,
            standin.faults,
            admin_any_client=settings.admin_any_client,
            max_body_bytes=settings.http_max_body_bytes,
            install=lambda app, admin: standin.install(app, db, admin),
        )
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        log.info("%s started (http port %s)", standin.name, settings.http_port)
        http = http_component(app, settings.http_host, settings.http_port)
        await run_components(standin.name, [http], stop, settings.shutdown_timeout_s)
    finally:
        await db.dispose()
    log.info("%s stopped", standin.name)


S = TypeVar("S", bound=StandInSettings)


def run(name: str, build: Callable[[S], StandIn], settings_cls: type[S]) -> None:
    """The console entrypoint: settings read once here; logs and tracing set up first."""
    settings = load_settings(name, settings_cls)
    with observed(name, settings):
        asyncio.run(serve(build(settings), settings))
