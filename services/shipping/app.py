"""The shipping service's entrypoint: settings, wiring, `python -m services.shipping`."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, field_validator, model_validator

from events.dependency import DependencySettings
from events.service import Service, ServiceSettings, run
from services.shipping.api import api
from services.shipping.carrier import Carrier
from services.shipping.handlers import build_router
from services.shipping.tables import metadata

# Batches while calling out: each call waits inside the batch's transaction, and a batch
# rolled back for an outage calls again (same keys, first answers) for every event in it.
DEPENDENCY_BATCH = 50
NAME = "shipping"
_COUNTRY = re.compile(r"[A-Z]{2}")


class Settings(ServiceSettings):
    http_port: int = Field(default=8104, ge=0, le=65535, description="HTTP port (0: none)")
    supported_countries: str = Field(
        default="DE,FR,NL,BE,GB,US",
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
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"CARRIER_URL must be an http:// or https:// URL, not {value!r}")
        return value

    @model_validator(mode="after")
    def _short_batches_when_calling_out(self) -> Self:
        if self.carrier_url and "consumer_batch" not in self.model_fields_set:
            self.consumer_batch = min(self.consumer_batch, DEPENDENCY_BATCH)
        return self

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

    def carrier(self) -> DependencySettings | None:
        """How to reach the carrier; None when there is none."""
        if not self.carrier_url:
            return None
        return DependencySettings(
            name="carrier",
            base_url=self.carrier_url,
            timeout_s=self.carrier_timeout_s,
            attempts=self.carrier_attempts,
            failure_threshold=self.carrier_failure_threshold,
            recovery_s=self.carrier_recovery_s,
        )


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
