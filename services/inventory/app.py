"""The inventory service's entrypoint: settings built once, then run."""

from __future__ import annotations

from pydantic import Field

from events.service import Service, ServiceSettings, run
from services.inventory.api import api
from services.inventory.handlers import router
from services.inventory.tables import metadata


class Settings(ServiceSettings):
    http_port: int = Field(default=8102, ge=0, le=65535, description="inventory HTTP port")


SERVICE = Service(
    name="inventory",
    metadata=metadata,
    router=router,
    topics=["orders.events", "inventory.requests", "payments.events"],
    api=api,
)


def main() -> None:
    run(SERVICE, Settings)
