"""The payment provider's entrypoint: settings read once, then served."""

from __future__ import annotations

from pydantic import Field

from services.provider.api import Policy, install
from services.provider.tables import metadata
from services.standin.process import StandIn, StandInSettings, run

NAME = "provider"


class Settings(StandInSettings):
    http_port: int = Field(default=8108, ge=0, le=65535, description="provider HTTP port")
    provider_max_amount_cents: int = Field(
        default=100_000_000, ge=0, description="Authorisations above this are declined (402)"
    )
    provider_declined_customers: str = Field(
        default="",
        description="Customers whose cards are declined, comma-separated (also PUT "
        "/admin/declined at run time)",
    )


def build(settings: Settings) -> StandIn:
    declined = {c.strip() for c in settings.provider_declined_customers.split(",") if c.strip()}
    policy = Policy(settings.provider_max_amount_cents, declined)
    return StandIn(NAME, metadata, install(policy))


def main() -> None:
    run(NAME, build, Settings)
