"""Structured logs: JSON in production, readable in a terminal; stdlib loggers included.

While an event is handled, its ids are bound in context variables, so every line logged
during the handling (by the runtime, the handler or a library) carries them.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from typing import IO, Any

import structlog

from events.telemetry import trace_ids

# The event being handled: one context variable set per event instead of five bound ones
# (the consumer's hot path); the processor below expands it only when a line is logged.
_EVENT: ContextVar[tuple[str, str, str, str | None] | None] = ContextVar(
    "choreo_event", default=None
)


def json_logs_wanted(log_format: str) -> bool:
    """``auto``: JSON unless stderr is a terminal (a person is reading)."""
    return log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())


def configure_logging(
    service: str, *, json: bool, level: str = "INFO", stream: IO[str] | None = None
) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _naming(service),
        add_event_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.CallsiteParameterAdder(
            {structlog.processors.CallsiteParameter.MODULE}
        ),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # A line per call to the provider or carrier; the dependency metrics and spans say more.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _naming(service: str) -> Any:
    """A processor naming the service on every line, whatever thread logs it: the context
    variable bound at configuration is the main thread's, and a line from another thread
    (faust's consumer thread, where aiokafka logs) had no service."""

    def add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def bind_event(
    *, event_type: str, event_id: str, correlation_id: str, traceparent: str | None
) -> Token[tuple[str, str, str, str | None] | None]:
    """Lines logged until ``unbind_event`` carry this event's ids (and its trace's)."""
    return _EVENT.set((event_type, event_id, correlation_id, traceparent))


def unbind_event(token: Token[tuple[str, str, str, str | None] | None]) -> None:
    _EVENT.reset(token)


def add_event_ids(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the handled event's ids, and the trace of the current span (or,
    without tracing, the trace the event's traceparent names)."""
    current = _EVENT.get()
    if current is None:
        return event_dict
    event_type, event_id, correlation_id, traceparent = current
    trace_id, span_id = trace_ids()
    if not trace_id:
        trace_id, span_id = trace_ids(traceparent)
        span_id = ""
    event_dict.setdefault("event_type", event_type)
    event_dict.setdefault("event_id", event_id)
    event_dict.setdefault("correlation_id", correlation_id)
    event_dict.setdefault("trace_id", trace_id)
    event_dict.setdefault("span_id", span_id)
    return event_dict
