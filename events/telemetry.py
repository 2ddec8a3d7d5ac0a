"""Tracing: one trace per saga. The trace context travels as the W3C ``traceparent``
header, is stored on outbox rows, and every handler's span is a child of its event's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Exporter = Literal["none", "console", "otlp"]
_propagator = TraceContextTextMapPropagator()


def setup_tracing(
    service: str, exporter: Exporter, otlp_endpoint: str | None = None
) -> TracerProvider | None:
    """Installs the process's tracer provider (once, at the entrypoint)."""
    if exporter == "none":
        return None
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = (
            OTLPSpanExporter(endpoint=otlp_endpoint) if otlp_endpoint else (OTLPSpanExporter())
        )
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("choreo")


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if there is a valid one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def parent_context(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def trace_ids(traceparent: str | None = None) -> tuple[str, str]:
    """(trace id, span id) in hex of the current span, or parsed from a traceparent."""
    if traceparent is None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        return "", ""
    parts = traceparent.split("-")
    return (parts[1], parts[2]) if len(parts) == 4 else ("", "")


def tracing_enabled() -> bool:
    """False until a tracer provider is installed: spans would be no-ops worth skipping."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


@contextmanager
def handling_span(
    name: str, traceparent: str | None, attributes: dict[str, str | int]
) -> Iterator[Span]:
    """A consumer span, child of the span that wrote the event (via its traceparent)."""
    with tracer().start_as_current_span(
        name, context=parent_context(traceparent), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def root_span(name: str, attributes: dict[str, str | int] | None = None) -> Iterator[Span]:
    """Where a saga starts (an API call, a CLI publish): the trace's first span."""
    with tracer().start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes=attributes or {}
    ) as span:
        yield span
