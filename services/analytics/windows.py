"""The windows analytics keeps and how they are served: sizes, retention, the JSON shape.

Pure: standard library only. Windows are tumbling and aligned on the epoch (a minute
window starts at :00), in event time: the envelope's occurred-at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.analytics.domain import WindowStats


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    size_s: int
    expires_s: int  # a window is dropped this long after it ends


WINDOWS = {
    "minute": WindowSpec("minute", 60, 6 * 3600),
    "hour": WindowSpec("hour", 3600, 8 * 24 * 3600),
}
DEFAULT_WINDOW = "minute"
DEFAULT_LIMIT = 60
MAX_LIMIT = 1000


class BadQuery(ValueError):
    """Query parameters the analytics endpoint refuses; the message says which and why."""


def window_start(timestamp: float, size_s: int) -> int:
    return int(timestamp // size_s * size_s)


def is_expired(start: float, spec: WindowSpec, now: float) -> bool:
    return start + spec.size_s + spec.expires_s <= now


def parse_query(params: Mapping[str, str]) -> tuple[WindowSpec, int]:
    name = params.get("window", DEFAULT_WINDOW)
    spec = WINDOWS.get(name)
    if spec is None:
        raise BadQuery(f"window must be one of {', '.join(WINDOWS)}, not {name!r}")
    raw = params.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        raise BadQuery(f"limit must be an integer, not {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return spec, limit


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def window_json(start: int, size_s: int, stats: WindowStats) -> dict[str, Any]:
    return {
        "start": iso(start),
        "end": iso(start + size_s),
        "placed": stats.placed,
        "completed": stats.completed,
        "rejected": stats.rejected,
        "cancelled": stats.cancelled,
        "captured_cents": stats.captured_cents,
        "refunded_cents": stats.refunded_cents,
        "failure_reasons": dict(sorted(stats.failure_reasons.items())),
        "duration_ms": stats.durations.summary(),
    }


def analytics_json(
    parts: Iterable[tuple[float, WindowStats]], spec: WindowSpec, *, now: float, limit: int
) -> dict[str, Any]:
    """The last ``limit`` windows that have data, oldest first, each the sum of its parts
    (the table keeps one part per source partition)."""
    merged: dict[int, WindowStats] = {}
    for start, stats in parts:
        begin = window_start(start, spec.size_s)
        if is_expired(begin, spec, now):
            continue  # the table drops these at its next clean-up; do not show them meanwhile
        merged.setdefault(begin, WindowStats()).merge(stats)
    starts = sorted(merged)[-limit:]
    return {
        "window": spec.name,
        "size_s": spec.size_s,
        "windows": [window_json(s, spec.size_s, merged[s]) for s in starts],
    }
