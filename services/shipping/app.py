"""The shipping service's entrypoint: settings, wiring, `python -m services.shipping`."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from events.dependency import CALLING_OUT_BATCH, DependencySettings, http_url
from events.service import Service, ServiceSettings, run
from services.addresses import DEFAULT_COUNTRIES, country_codes
from services.shipping.api import api
from services.shipping.carrier import Carrier
from services.shipping.handlers import build_router
from services.shipping.tables import metadata

NAME = "shipping"


class Settings(ServiceSettings):
    http_port: int = Field(default=8104, ge=0, le=65535, description="HTTP port (0: none)")
    supported_countries: str = Field(
        default=DEFAULT_COUNTRIES,
        description="Countries shipped to without a carrier (with one, the carrier decides): "
        "comma-separated ISO 3166-1 alpha-2 codes, upper case",
    )
    carrier_url: str = Field(
        default="",
        description="The carrier's base URL (http://host:port); empty: no carrier, shipping "
        "decides from SUPPORTED_COUNTRIES",
    )
    carrier_timeout_s: float = Field(
        default=2.0, gt=0, description="Seconds one call to the carrier may take"
    )
    carrier_attempts: int = Field(
        default=3, ge=1, le=20, description="Tries per call, with the same idempotency key"
    )
    carrier_failure_threshold: int = Field(
        default=5, ge=1, description="Failed calls in a row that open the carrier's breaker"
    )
    carrier_recovery_s: float = Field(
        default=5.0, gt=0, description="Seconds the breaker stays open before a probe"
    )

    @field_validator("carrier_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "CARRIER_URL")

    @model_validator(mode="after")
    def _short_batches_when_calling_out(self) -> Self:
        if self.carrier_url and "consumer_batch" not in self.model_fields_set:
            self.consumer_batch = min(self.consumer_batch, CALLING_OUT_BATCH)
        return self

    @field_validator("supported_countries")
    @classmethod
    def _country_codes(cls, value: str) -> str:
        return country_codes(value, "SUPPORTED_COUNTRIES")

    @property
    def supported(self) -> frozenset[str]:
        return frozenset(self.supported_countries.split(","))

    def carrier(self) -> DependencySettings | None:
        """How to reach the carrier; None when there is none."""
        return DependencySettings.from_prefix(self, "carrier", name="carrier")


def build_service(settings: Settings) -> Service:
    carrier_settings = settings.carrier()
    carrier = None if carrier_settings is None else Carrier(carrier_settings)
    return Service(
        name=NAME,
        metadata=metadata,
        router=build_router(settings.supported, carrier),
        topics=["payments.events", "orders.events"],
        api=api,
        # Its breaker in /health, its client closed at shutdown.
        dependencies=[] if carrier is None else [carrier.dependency],
    )


def main() -> None:
    run(build_service, Settings)
