"""The carrier's entrypoint: settings read once, then served."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.addresses import DEFAULT_COUNTRIES, country_codes
from services.carrier.api import install
from services.carrier.tables import metadata
from services.standin.process import StandIn, StandInSettings, run

NAME = "carrier"


class Settings(StandInSettings):
    http_port: int = Field(default=8109, ge=0, le=65535, description="carrier HTTP port")
    carrier_countries: str = Field(
        default=DEFAULT_COUNTRIES,
        description="Countries the carrier delivers to: comma-separated ISO 3166-1 alpha-2 "
        "codes, upper case",
    )

    @field_validator("carrier_countries")
    @classmethod
    def _country_codes(cls, value: str) -> str:
        return country_codes(value, "CARRIER_COUNTRIES")

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(self.carrier_countries.split(","))


def build(settings: Settings) -> StandIn:
    return StandIn(NAME, metadata, install(settings.countries))


def main() -> None:
    run(NAME, build, Settings)
