"""Structured logs: JSON in production, readable in a terminal; stdlib loggers included.

While an event is handled, its ids are bound in context variables, so every line logged
during the handling (by the runtime, the handler or a library) carries them.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog


def configure_logging(
    service: str, *, json: bool, level: str = "INFO", stream: IO[str] | None = None
) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
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
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def bind_event(
    *, event_type: str, event_id: str, correlation_id: str, trace_id: str, span_id: str
) -> None:
    structlog.contextvars.bind_contextvars(
        event_type=event_type,
        event_id=event_id,
        correlation_id=correlation_id,
        trace_id=trace_id,
        span_id=span_id,
    )


def unbind_event() -> None:
    structlog.contextvars.unbind_contextvars(
        "event_type", "event_id", "correlation_id", "trace_id", "span_id"
    )
