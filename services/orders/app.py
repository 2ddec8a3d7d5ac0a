"""The orders service's entrypoint: settings built once, then run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import Field

from events.service import Component, Service, ServiceContext, ServiceSettings, run
from services.orders.api import api
from services.orders.handlers import build_router
from services.orders.tables import metadata
from services.orders.watchdog import Watchdog, WatchdogConfig

NAME = "orders"


class Settings(ServiceSettings):
    http_port: int = Field(default=8101, ge=0, le=65535, description="orders HTTP port")
    saga_deadline_s: float = Field(
        default=300,
        gt=0,
        le=30 * 86400,
        description="Seconds an order's saga may take before the order is reported stuck",
    )
    stuck_scan_interval_s: float = Field(
        default=5,
        gt=0,
        le=3600,
        description="How often the watchdog looks for orders past their saga deadline",
    )
    saga_timeout_enabled: bool = Field(
        default=False,
        description="Also cancel a stuck order (OrderCancelled, which the other services "
        "compensate) instead of only reporting it",
    )

    @property
    def saga_deadline(self) -> timedelta:
        return timedelta(seconds=self.saga_deadline_s)


def build_service(settings: Settings) -> Service:
    deadline = settings.saga_deadline
    config = WatchdogConfig(
        scan_interval=timedelta(seconds=settings.stuck_scan_interval_s),
        time_out=settings.saga_timeout_enabled,
    )

    def routes(ctx: ServiceContext) -> APIRouter:
        return api(ctx, deadline)

    def watchdog(ctx: ServiceContext) -> Component:
        return Component("watchdog", run=Watchdog(ctx.db, ctx.outbox, config).run)

    return Service(
        name=NAME,
        metadata=metadata,
        router=build_router(deadline),
        topics=["orders.requests", "inventory.events", "payments.events", "shipping.events"],
        api=routes,
        components=[watchdog],
    )


def main() -> None:
    run(build_service, Settings)
