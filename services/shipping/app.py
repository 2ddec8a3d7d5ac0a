"""The shipping service's entrypoint: settings, wiring, `python -m services.shipping`."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from events.service import Service, ServiceSettings, run
from services.shipping.api import api
from services.shipping.handlers import build_router
from services.shipping.tables import metadata

NAME = "shipping"
_COUNTRY = re.compile(r"[A-Z]{2}")


class Settings(ServiceSettings):
    http_port: int = Field(default=8104, ge=0, le=65535, description="HTTP port (0: none)")
    supported_countries: str = Field(
        default="DE,FR,NL,BE,GB,US",
        description="Countries shipped to: comma-separated ISO 3166-1 alpha-2 codes, upper case",
    )

    @field_validator("supported_countries")
    @classmethod
    def _country_codes(cls, value: str) -> str:
        codes = [code.strip() for code in value.split(",")]
        bad = [code for code in codes if not _COUNTRY.fullmatch(code)]
        if bad:
            raise ValueError(
                "SUPPORTED_COUNTRIES must be comma-separated 2-letter upper-case country codes "
                f"(e.g. DE,FR); not {', '.join(repr(code) for code in bad)}"
            )
        return ",".join(codes)

    @property
    def supported(self) -> frozenset[str]:
        return frozenset(self.supported_countries.split(","))


def build_service(settings: Settings) -> Service:
    return Service(
        name=NAME,
        metadata=metadata,
        router=build_router(settings.supported),
        topics=["payments.events", "orders.events"],
        api=api,
    )


def main() -> None:
    run(build_service, Settings)
