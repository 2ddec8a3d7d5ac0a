"""Tracing setup: sampling is the user's choice through OpenTelemetry's own variables, and a
saga stays whole under a parent-based sampler; the standard OTEL_* variables choose the
exporter, its endpoint and the service name; spans follow the messaging conventions (checked
against the opentelemetry-semantic-conventions package's names). No exporter is reached
(nothing is sent)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.envelope import Envelope, utcnow
from events.process import ProcessSettings
from events.settings import load_settings
from events.telemetry import (
    created_traceparent,
    end_send_span,
    instrument_app,
    parent_context,
    process_span,
    start_send_span,
    traceparent_of,
    tracer,
    tracer_provider,
)
from tests.tracing import memory_exporter

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_no_exporter_gives_no_provider():
    assert tracer_provider("svc", "none") is None


def test_the_default_records_every_saga(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider = tracer_provider("svc", "console")
    assert provider is not None
    try:
        root = provider.get_tracer("t").start_span("root", kind=SpanKind.PRODUCER)
        assert root.is_recording() and root.get_span_context().trace_flags.sampled
        root.end()
    finally:
        provider.shutdown()


def test_otel_traces_sampler_is_honoured_and_keeps_sagas_whole(monkeypatch):
    # Sample no new trace, but follow the parent: a saga started before (sampled) keeps
    # every service's handling span.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    provider = tracer_provider("svc", "console")
    assert provider is not None
    try:
        spans = provider.get_tracer("t")
        root = spans.start_span("root", kind=SpanKind.PRODUCER)
        assert not root.is_recording()
        child = spans.start_span(
            "handle X", context=parent_context(SAMPLED_PARENT), kind=SpanKind.CONSUMER
        )
        assert child.is_recording()
        assert f"{child.get_span_context().trace_id:032x}" == SAMPLED_PARENT.split("-")[1]
        child.end()
    finally:
        provider.shutdown()


def test_the_tracer_is_looked_up_once_per_provider():
    assert tracer() is tracer()


# --- the messaging conventions and the standard OTEL_* variables (issue 20) ---


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = memory_exporter()
    yield exporter
    exporter.shutdown()  # keeps no more spans: the provider outlives this module


def _envelope(traceparent: str | None = SAMPLED_PARENT) -> Envelope:
    return Envelope(
        event_id=str(uuid.uuid4()),
        event_type="OrderCreated",
        schema_version=1,
        occurred_at=utcnow(),
        producer="orders",
        correlation_id="c",
        key="order-1",
        traceparent=traceparent,
    )


def _parent_span_id(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


def test_a_process_span_follows_the_messaging_conventions(spans):
    spans.clear()
    env = _envelope()
    process_span(env, "t.orders", 2, 41, group="t.payments").end()
    (span,) = spans.get_finished_spans()
    assert span.name == "process t.orders" and span.kind is SpanKind.CONSUMER
    assert dict(span.attributes) == {
        messaging.MESSAGING_SYSTEM: "kafka",
        messaging.MESSAGING_OPERATION_TYPE: messaging.MessagingOperationTypeValues.PROCESS.value,
        messaging.MESSAGING_OPERATION_NAME: "process",
        messaging.MESSAGING_DESTINATION_NAME: "t.orders",
        messaging.MESSAGING_DESTINATION_PARTITION_ID: "2",
        messaging.MESSAGING_KAFKA_OFFSET: 41,
        messaging.MESSAGING_KAFKA_MESSAGE_KEY: "order-1",
        messaging.MESSAGING_MESSAGE_ID: env.event_id,
        messaging.MESSAGING_CONSUMER_GROUP_NAME: "t.payments",
        "choreo.event_type": "OrderCreated",
    }
    assert span.parent is not None and span.parent.span_id == _parent_span_id(SAMPLED_PARENT)
    assert f"{span.context.trace_id:032x}" == SAMPLED_PARENT.split("-")[1]


def test_a_reader_in_no_group_is_named_by_choreo_consumer(spans):
    spans.clear()
    process_span(_envelope(), "t.orders", 0, 1, consumer="projection-query").end()
    (span,) = spans.get_finished_spans()
    assert messaging.MESSAGING_CONSUMER_GROUP_NAME not in span.attributes
    assert span.attributes["choreo.consumer"] == "projection-query"


def test_a_send_span_is_the_rows_child_and_the_parent_the_message_names(spans):
    spans.clear()
    span = start_send_span("t.orders", SAMPLED_PARENT)
    sent = traceparent_of(span)
    end_send_span(span, None)
    (done,) = spans.get_finished_spans()
    assert done.name == "send t.orders" and done.kind is SpanKind.PRODUCER
    assert done.parent is not None and done.parent.span_id == _parent_span_id(SAMPLED_PARENT)
    assert sent is not None and _parent_span_id(sent) == done.context.span_id
    assert sent.split("-")[1] == SAMPLED_PARENT.split("-")[1] and sent.endswith("-01")
    # What the propagator would write for it: the same header.
    assert sent == _propagated(done.context)
    assert dict(done.attributes) == {  # the conventions' required ones (one span per row)
        messaging.MESSAGING_SYSTEM: "kafka",
        messaging.MESSAGING_OPERATION_TYPE: messaging.MessagingOperationTypeValues.SEND.value,
        messaging.MESSAGING_OPERATION_NAME: "send",
        messaging.MESSAGING_DESTINATION_NAME: "t.orders",
    }


def _propagated(context) -> str:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, context=set_span_in_context(NonRecordingSpan(context))
    )
    return carrier["traceparent"]


def test_a_refused_send_is_an_error_span(spans):
    spans.clear()
    span = start_send_span("t.orders", None)
    end_send_span(span, ValueError("too large"))
    (done,) = spans.get_finished_spans()
    assert done.status.status_code is StatusCode.ERROR and "too large" in done.status.description
    assert done.parent is None  # a row written without tracing starts a trace here


def _clear_tracing_env(monkeypatch):
    for name in (
        "TRACE_EXPORTER",
        "OTLP_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env file read


def test_the_standard_otel_variables_are_read(monkeypatch):
    _clear_tracing_env(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-eu")
    settings = ProcessSettings()
    assert settings.trace_exporter == "otlp"
    assert settings.traces_endpoint() == "http://collector:4318/v1/traces"
    assert settings.service_name("orders") == "orders-eu"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://jaeger:4318/v1/traces")
    assert ProcessSettings().traces_endpoint() == "http://jaeger:4318/v1/traces"


def test_the_older_names_still_work_and_the_standard_ones_win(monkeypatch):
    _clear_tracing_env(monkeypatch)
    monkeypatch.setenv("TRACE_EXPORTER", "console")
    monkeypatch.setenv("OTLP_ENDPOINT", "http://old:4318/v1/traces")
    settings = ProcessSettings()
    assert settings.trace_exporter == "console"
    assert settings.traces_endpoint() == "http://old:4318/v1/traces"
    assert settings.service_name("orders") == "orders"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://new:4318/v1/traces")
    settings = ProcessSettings()
    assert settings.trace_exporter == "none"
    assert settings.traces_endpoint() == "http://new:4318/v1/traces"


def test_a_bad_exporter_name_is_one_line_naming_the_variable(monkeypatch, capsys):
    _clear_tracing_env(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(SystemExit):
        load_settings("orders", ProcessSettings)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "OTEL_TRACES_EXPORTER" in err and "jaeger" in err


def test_the_provider_carries_the_service_name():
    provider = tracer_provider("orders-eu", "console")
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "orders-eu"
    finally:
        provider.shutdown()


async def test_a_request_is_a_server_span_continuing_the_callers_trace_and_probes_are_not():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()

    @app.post("/api/v1/orders")
    async def place() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    instrument_app(app, provider)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/health")).status_code == 200
        assert not exporter.get_finished_spans()
        r = await client.post("/api/v1/orders", headers={"traceparent": SAMPLED_PARENT})
        assert r.status_code == 200
    (span,) = exporter.get_finished_spans()  # no spans for the ASGI messages inside it
    assert span.kind is SpanKind.SERVER and span.name == "POST /api/v1/orders"
    assert span.parent is not None and span.parent.span_id == _parent_span_id(SAMPLED_PARENT)
    assert f"{span.context.trace_id:032x}" == SAMPLED_PARENT.split("-")[1]


def test_a_published_message_is_created_in_a_create_span_its_traceparent_names(spans):
    spans.clear()
    event_id = str(uuid.uuid4())
    sent = created_traceparent("t.stock", "sku-1", event_id)
    (span,) = spans.get_finished_spans()
    assert span.name == "create t.stock" and span.kind is SpanKind.PRODUCER
    assert span.attributes[messaging.MESSAGING_OPERATION_TYPE] == (
        messaging.MessagingOperationTypeValues.CREATE.value
    )
    assert span.attributes[messaging.MESSAGING_MESSAGE_ID] == event_id
    assert span.attributes[messaging.MESSAGING_KAFKA_MESSAGE_KEY] == "sku-1"
    assert sent is not None and _parent_span_id(sent) == span.context.span_id
