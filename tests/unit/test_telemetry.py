"""Tracing setup: sampling is the user's choice through OpenTelemetry's own variables, and a
saga stays whole under a parent-based sampler. No exporter is reached (nothing is sent)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from events.telemetry import parent_context, tracer, tracer_provider

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
