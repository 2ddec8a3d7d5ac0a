"""Tracing: one trace per saga. The trace context travels as the W3C ``traceparent``
header, is stored on outbox rows, and every handler's span is a child of its event's.

Spans follow OpenTelemetry's messaging conventions (the attribute names are the constants
of ``opentelemetry.semconv._incubating.attributes.messaging_attributes``, copied as strings
here because the module is marked incubating): the relay's ``send <topic>`` PRODUCER span
per published row, child of the span that wrote the row, whose traceparent the Kafka
message carries; a ``process <topic>`` CONSUMER span per handled event, child of that send
span. An HTTP request is a SERVER span (FastAPI's instrumentation) continuing the client's
``traceparent``, so a saga's trace can begin in the caller's.

What a span costs is paid per handled event, so the hot path is kept short: the tracer is
looked up once per provider (``TracerProvider.get_tracer`` builds a scope and edits the
warnings filters on every call), a handling span is started and made current with the
public ``start_span``/``use_span`` pair, and it carries the conventions' attributes and
one of choreo's (each costs its validation when the span starts, twice with the sampler's
copy, and its protobuf encoding in the exporter's thread).

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


# Attribute names and values of the messaging conventions (semantic conventions 1.3x+).
SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
PARTITION = "messaging.destination.partition.id"
GROUP = "messaging.consumer.group.name"
OFFSET = "messaging.kafka.offset"
KEY = "messaging.kafka.message.key"
MESSAGE_ID = "messaging.message.id"
EVENT_TYPE = "choreo.event_type"  # the span names the topic, which several types share
CONSUMER = "choreo.consumer"  # a reader outside any consumer group (a projection's)


def tracer_provider(
    service: str, exporter: Exporter, otlp_endpoint: str | None = None
) -> TracerProvider | None:
    """The provider for ``exporter`` (None for "none"), not installed. Its sampler and the
    batch processor's sizes come from the OTEL_* variables (see the module docstring);
    ``otlp_endpoint``: the full traces URL (None: the exporter's default,
    http://localhost:4318/v1/traces)."""
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


def process_span(
    envelope: Envelope,
    topic: str,
    partition: int,
    offset: int,
    *,
    group: str | None = None,
    consumer: str | None = None,
) -> Span:
    """The CONSUMER span ``process <topic>`` of one event read at ``partition``/``offset``,
    child of the span that sent it, not yet current (``start_handling_span``). ``group``:
    the consumer group; ``consumer``: the reader's name when it is in no group."""
    attributes: dict[str, str | int] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: "process",
        OPERATION_NAME: "process",
        DESTINATION: topic,
        PARTITION: str(partition),
        OFFSET: offset,
        KEY: envelope.key,
        MESSAGE_ID: envelope.event_id,
        EVENT_TYPE: envelope.event_type,
    }
    if group is not None:
        attributes[GROUP] = group
    if consumer is not None:
        attributes[CONSUMER] = consumer
    return start_handling_span(f"process {topic}", envelope.traceparent, attributes)


def start_send_span(topic: str, traceparent: str | None) -> Span:
    """The PRODUCER span ``send <topic>`` of one message, child of the span that wrote it
    (``traceparent``, stored with the outbox row), not current: the caller ends it at the
    broker's answer (``end_send_span``). The conventions' required attributes only: one
    such span per published row, and each attribute costs on every one (the consumer's
    process span names the message: id, key, partition, offset)."""
    return tracer().start_span(
        f"send {topic}",
        context=parent_context(traceparent),
        kind=SpanKind.PRODUCER,
        attributes={
            SYSTEM: "kafka",
            OPERATION_TYPE: "send",
            OPERATION_NAME: "send",
            DESTINATION: topic,
        },
    )


def end_send_span(span: Span, error: BaseException | None) -> None:
    """Ends a send span at the broker's answer (an error is recorded on it)."""
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def traceparent_of(span: Span) -> str | None:
    """The W3C traceparent naming ``span`` (what a message it sends carries), written from
    its public span context: the propagator's inject would build a context per row."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


@contextmanager
def batch_spans(consumer: str, events: Sequence[Event[Any]]) -> Iterator[None]:
    """One ``process <topic>`` span per event of a batch applied together (a projection's,
    whose reader is in no consumer group: ``consumer`` names it), each a child of the span
    that sent its event; all end when the batch's work does (an error recorded on each).
    None current: the batch's statements belong to every event at once. Nothing when no
    tracer is installed."""
    if not events or not tracing_enabled():
        yield
        return
    spans = [
        process_span(e.envelope, e.topic, e.partition, e.offset, consumer=consumer) for e in events
    ]
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


def created_traceparent(topic: str, key: str, event_id: str) -> str | None:
    """The creation context of a message made outside any handler (a CLI publish): its
    ``create <topic>`` PRODUCER span (child of the current span, if any; ended at once, the
    conventions' span for one message's creation) as a traceparent; None without a tracer."""
    if not tracing_enabled():
        return None
    attributes: dict[str, str | int] = {
        SYSTEM: "kafka",
        OPERATION_TYPE: "create",
        OPERATION_NAME: "create",
        DESTINATION: topic,
        KEY: key,
        MESSAGE_ID: event_id,
    }
    span = tracer().start_span(f"create {topic}", kind=SpanKind.PRODUCER, attributes=attributes)
    span.end()
    return traceparent_of(span)


@contextmanager
def saga_span(name: str, attributes: dict[str, str | int] | None = None) -> Iterator[Span]:
    """Where a saga starts inside an HTTP request: a child of the request's server span
    (itself continuing the client's traceparent), or the trace's first span without one."""
    with tracer().start_as_current_span(
        name, kind=SpanKind.INTERNAL, attributes=attributes or {}
    ) as span:
        yield span


# Probes and scrapes are no part of any saga: no server span for them.
UNTRACED_PATHS = r"/health$,/ready$,/metrics$"


def instrument_app(app: Any, provider: trace.TracerProvider | None = None) -> None:
    """Makes each HTTP request of the FastAPI ``app`` (but /health, /ready, /metrics) a
    server span continuing the caller's ``traceparent``; nothing without a tracer. No
    spans for the ASGI messages inside a request (two or more per request, no news).
    Imported when wanted, as the httpx instrumentation."""
    if provider is None:
        if not tracing_enabled():
            return
        provider = trace.get_tracer_provider()
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_PATHS,
        exclude_spans=["receive", "send"],
    )


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
