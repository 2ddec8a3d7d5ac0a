"""The payments service's entrypoint: settings built once, then run."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from events.dependency import CALLING_OUT_BATCH, DependencySettings, http_url
from events.service import Service, ServiceSettings, run
from services.payments.api import api
from services.payments.handlers import build_router, router
from services.payments.provider import Provider
from services.payments.tables import metadata

NAME = "payments"
TOPICS = ["payments.requests", "inventory.events", "orders.events", "shipping.events"]


class Settings(ServiceSettings):
    http_port: int = Field(default=8103, ge=0, le=65535, description="payments HTTP port")
    payment_provider_url: str = Field(
        default="",
        description="The payment provider's base URL (http://host:port); empty: no provider, "
        "the books alone decide",
    )
    payment_provider_timeout_s: float = Field(
        default=2.0, gt=0, description="Seconds one call to the provider may take"
    )
    payment_provider_attempts: int = Field(
        default=3, ge=1, le=20, description="Tries per call, with the same idempotency key"
    )
    payment_provider_failure_threshold: int = Field(
        default=5, ge=1, description="Failed calls in a row that open the provider's breaker"
    )
    payment_provider_recovery_s: float = Field(
        default=5.0, gt=0, description="Seconds the breaker stays open before a probe"
    )

    @field_validator("payment_provider_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "PAYMENT_PROVIDER_URL")

    @model_validator(mode="after")
    def _short_batches_when_calling_out(self) -> Self:
        if self.payment_provider_url and "consumer_batch" not in self.model_fields_set:
            self.consumer_batch = min(self.consumer_batch, CALLING_OUT_BATCH)
        return self

    def provider(self) -> DependencySettings | None:
        """How to reach the payment provider; None when there is none."""
        return DependencySettings.from_prefix(self, "payment_provider", name="provider")


# Without a payment provider: the books alone decide.
SERVICE = Service(name=NAME, metadata=metadata, router=router, topics=TOPICS, api=api)


def build_service(settings: Settings) -> Service:
    """The service as ``settings`` configure it: with the payment provider when it has a URL."""
    provider_settings = settings.provider()
    if provider_settings is None:
        return SERVICE
    provider = Provider(provider_settings)
    return Service(
        name=NAME,
        metadata=metadata,
        router=build_router(provider),
        topics=TOPICS,
        api=api,
        dependencies=[provider.dependency],  # its breaker in /health, closed at shutdown
    )


def main() -> None:
    run(build_service, Settings)
