"""What every service process has, whatever runs inside it (the platform's serve loop or
faust's worker): its logging, tracing and shutdown settings, and the one place they are
applied at the entrypoint.

Tracing reads OpenTelemetry's standard variables (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``) as settings, so a ``.env`` file holds them too and a bad value stops
the process with one line; the older ``TRACE_EXPORTER`` and ``OTLP_ENDPOINT`` are still read
(the standard names win when both are set)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from opentelemetry.sdk.trace import TracerProvider
from pydantic import AliasChoices, Field

from events.logs import configure_logging, json_logs_wanted
from events.settings import PlatformSettings
from events.telemetry import setup_tracing


class ProcessSettings(PlatformSettings):
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    trace_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "TRACE_EXPORTER"),
        description="Where spans go (otlp: an OTLP/HTTP collector, e.g. Jaeger); read from "
        "OTEL_TRACES_EXPORTER, else TRACE_EXPORTER",
    )
    otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTLP_ENDPOINT"),
        description="OTLP/HTTP traces URL, e.g. http://jaeger:4318/v1/traces; read from "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTLP_ENDPOINT",
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP base URL (spans go to <it>/v1/traces) when no traces URL is set",
    )
    otel_service_name: str = Field(
        default="", description="service.name on the spans (default: the service's name)"
    )
    shutdown_timeout_s: float = Field(default=20.0, gt=0, description="Bound on graceful stop")

    def service_name(self, process: str) -> str:
        """The spans' service.name: OTEL_SERVICE_NAME, else the process's name."""
        return self.otel_service_name or process

    def traces_endpoint(self) -> str | None:
        """The URL spans are posted to (None: the exporter's default, localhost:4318)."""
        if self.otlp_endpoint:
            return self.otlp_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None


@contextlib.contextmanager
def observed(name: str, settings: ProcessSettings) -> Iterator[TracerProvider | None]:
    """JSON logs (or a terminal's) and the tracer provider for the process ``name``, set up
    once at its entrypoint; on exit the spans still buffered are flushed."""
    configure_logging(name, json=json_logs_wanted(settings.log_format), level=settings.log_level)
    provider = setup_tracing(
        settings.service_name(name), settings.trace_exporter, settings.traces_endpoint()
    )
    try:
        yield provider
    finally:
        if provider is not None:
            provider.shutdown()
