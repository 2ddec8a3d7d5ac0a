"""Tracing: one trace per saga. The trace context travels as the W3C ``traceparent``
header, is stored on outbox rows, and every handler's span is a child of its event's.

What a span costs is paid per handled event, so the hot path is kept short: the tracer is
looked up once per provider (``TracerProvider.get_tracer`` builds a scope and edits the
warnings filters on every call), a handling span is started and made current with the
public ``start_span``/``use_span`` pair, and it carries few attributes (each costs its
validation when the span starts, twice with the sampler's copy, and its protobuf encoding
in the exporter's thread).

Sampling and batching are the user's choice through OpenTelemetry's own variables, read by
the SDK when the provider is built: ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``
(default: ParentBased(always_on), every saga recorded; a parent-based sampler keeps a saga's
spans together) and ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_EXPORT_TIMEOUT``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.envelope import Envelope, Event

if TYPE_CHECKING:
    import httpx

Exporter = Literal["none", "console", "otlp"]
_propagator = TraceContextTextMapPropagator()


def tracer_provider(
    service: str, exporter: Exporter, otlp_endpoint: str | None = None
) -> TracerProvider | None:
    """The provider for ``exporter`` (None for "none"), not installed. Its sampler and the
    batch processor's sizes come from the OTEL_* variables (see the module docstring)."""
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
    return provider


def setup_tracing(
    service: str, exporter: Exporter, otlp_endpoint: str | None = None
) -> TracerProvider | None:
    """Installs the process's tracer provider (once, at the entrypoint)."""
    provider = tracer_provider(service, exporter, otlp_endpoint)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return _tracer_of(trace.get_tracer_provider())


@functools.cache
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    # Keyed by the provider: one installed later (a test's) gets its own tracer.
    return provider.get_tracer("choreo")


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


def start_handling_span(
    name: str, traceparent: str | None, attributes: dict[str, str | int]
) -> Span:
    """A consumer span, child of the span that wrote the event (via its traceparent), not
    yet current: the caller makes it so with ``opentelemetry.trace.use_span(span,
    end_on_exit=True)`` around the handler (one context manager per event instead of two)."""
    return tracer().start_span(
        name, context=parent_context(traceparent), kind=SpanKind.CONSUMER, attributes=attributes
    )


@contextmanager
def handling_span(
    name: str, traceparent: str | None, attributes: dict[str, str | int]
) -> Iterator[Span]:
    """``start_handling_span``, current and ended on exit (exceptions recorded on it)."""
    with trace.use_span(start_handling_span(name, traceparent, attributes), end_on_exit=True) as s:
        yield s


def event_span(consumer: str, topic: str, envelope: Envelope) -> Span:
    """``start_handling_span`` for an event ``consumer`` read from ``topic``, with the
    consumer's five attributes."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "choreo.consumer": consumer,
        "choreo.event_type": envelope.event_type,
        "choreo.event_id": envelope.event_id,
    }
    return start_handling_span(f"handle {envelope.event_type}", envelope.traceparent, attributes)


@contextmanager
def batch_spans(consumer: str, events: Sequence[Event[Any]]) -> Iterator[None]:
    """One handling span per event of a batch applied together (a projection's), each a
    child of the span that wrote its event, with the consumer's five attributes; all end
    when the batch's work does (an error recorded on each). None current: the batch's
    statements belong to every event at once. Nothing when no tracer is installed."""
    if not events or not tracing_enabled():
        yield
        return
    spans = [event_span(consumer, event.topic, event.envelope) for event in events]
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        for span in spans:
            span.end()


@contextmanager
def root_span(name: str, attributes: dict[str, str | int] | None = None) -> Iterator[Span]:
    """Where a saga starts (an API call, a CLI publish): the trace's first span."""
    with tracer().start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes=attributes or {}
    ) as span:
        yield span


def instrument_http_client(
    client: httpx.AsyncClient, provider: trace.TracerProvider | None = None
) -> None:
    """Makes each request of ``client`` a client span, child of the current span (the
    handler's: the order's trace), that sends ``traceparent``; nothing without a tracer.
    ``provider``: the installed one by default. The instrumentation is imported here, when
    wanted, so processes that call nobody do not load it."""
    if provider is None:
        if not tracing_enabled():
            return
        provider = trace.get_tracer_provider()
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
