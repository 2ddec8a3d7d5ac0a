"""The orders service's entrypoint: settings built once, then run."""

from __future__ import annotations

from pydantic import Field

from events.service import Service, ServiceSettings, run
from services.orders.api import api
from services.orders.handlers import router
from services.orders.tables import metadata


class Settings(ServiceSettings):
    http_port: int = Field(default=8101, ge=0, le=65535, description="orders HTTP port")


SERVICE = Service(
    name="orders",
    metadata=metadata,
    router=router,
    topics=["orders.requests", "inventory.events", "payments.events", "shipping.events"],
    api=api,
)


def main() -> None:
    run(SERVICE, Settings)
