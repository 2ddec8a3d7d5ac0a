"""The notifications service's entrypoint: settings, wiring, `python -m services.notifications`."""

from __future__ import annotations

from pydantic import Field

from events.service import Service, ServiceSettings, run
from services.notifications.api import api
from services.notifications.handlers import router
from services.notifications.tables import metadata


class Settings(ServiceSettings):
    http_port: int = Field(default=8105, ge=0, le=65535, description="HTTP port (0: none)")


# A description only: no client or connection exists until main() serves it.
SERVICE = Service(
    name="notifications",
    metadata=metadata,
    router=router,
    topics=["orders.events"],
    api=api,
)


def main() -> None:
    run(SERVICE, Settings)
