"""Spans kept in memory for the tests that check them.

OpenTelemetry installs a process's tracer provider once (a second ``set_tracer_provider`` is
ignored with a warning), and one pytest session runs unit and integration tests together:
every test that wants the spans the platform's code makes (through the installed provider)
gets its own exporter on the one provider installed here, and shuts it down when done (a
stopped exporter keeps nothing of the later tests' spans)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def memory_exporter() -> InMemorySpanExporter:
    """A new exporter receiving every span ended from now on in this process."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
