"""What every service process has, whatever runs inside it (the platform's serve loop or
faust's worker): its logging, tracing and shutdown settings, and the one place they are
applied at the entrypoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from opentelemetry.sdk.trace import TracerProvider
from pydantic import Field

from events.logs import configure_logging, json_logs_wanted
from events.settings import PlatformSettings
from events.telemetry import setup_tracing


class ProcessSettings(PlatformSettings):
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    trace_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where spans go (otlp: OTEL endpoint, e.g. Jaeger)"
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP traces URL, e.g. http://jaeger:4318/v1/traces"
    )
    shutdown_timeout_s: float = Field(default=20.0, gt=0, description="Bound on graceful stop")


@contextlib.contextmanager
def observed(name: str, settings: ProcessSettings) -> Iterator[TracerProvider | None]:
    """JSON logs (or a terminal's) and the tracer provider for the process ``name``, set up
    once at its entrypoint; on exit the spans still buffered are flushed."""
    configure_logging(name, json=json_logs_wanted(settings.log_format), level=settings.log_level)
    provider = setup_tracing(name, settings.trace_exporter, settings.otlp_endpoint or None)
    try:
        yield provider
    finally:
        if provider is not None:
            provider.shutdown()
