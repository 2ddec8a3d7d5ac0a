"""The payments service's entrypoint: settings built once, then run."""

from __future__ import annotations

from pydantic import Field

from events.service import Service, ServiceSettings, run
from services.payments.api import api
from services.payments.handlers import router
from services.payments.tables import metadata


class Settings(ServiceSettings):
    http_port: int = Field(default=8103, ge=0, le=65535, description="payments HTTP port")


SERVICE = Service(
    name="payments",
    metadata=metadata,
    router=router,
    topics=["payments.requests", "inventory.events", "orders.events", "shipping.events"],
    api=api,
)


def main() -> None:
    run(SERVICE, Settings)
