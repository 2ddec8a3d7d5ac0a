"""An order's timeline in causal order, and trace ids from W3C ``traceparent``. Pure.

Each service stamps ``occurred_at`` with its own clock, so two services' clocks can disagree
by more than the time between a cause and its effect. Sorting by time alone could then show
``PaymentCaptured`` before the ``StockReserved`` that caused it. The order used here is a
topological sort over the causation links (an event's ``causation_id`` is the id of the event
that made the service emit it), breaking ties by ``occurred_at``, then event type, then event
id:

1. an event whose cause is in the timeline waits until that cause is placed;
2. among the events whose causes are all placed (or are not in the timeline, such as the
   ``OrderPlaced`` request behind ``OrderCreated``), the earliest ``occurred_at`` goes next.

So a cause always precedes its effects, and otherwise the timeline reads by time. The
result depends only on the set of events, never on the order they were read in. Should the
links ever form a cycle (they cannot, unless headers were forged), the events left over are
appended by time.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None if absent or malformed."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None:
        return None
    version, trace, span, _ = match.groups()
    if version == "ff" or trace == "0" * 32 or span == "0" * 16:
        return None  # invalid per the spec
    return trace


@dataclass(frozen=True, slots=True)
class Entry:
    event_id: str
    event_type: str
    occurred_at: str  # ISO-8601 UTC, fixed width (services.query.domain.iso)
    causation_id: str | None

    def key(self) -> tuple[str, str, str]:
        return self.occurred_at, self.event_type, self.event_id


T = TypeVar("T", bound=Entry)


def causal_order(entries: Sequence[T]) -> list[T]:
    """The entries with every cause before its effects, otherwise by time (see above)."""
    by_id = {e.event_id: e for e in entries}
    effects: dict[str, list[T]] = {}
    waiting: dict[str, int] = {}
    ready: list[tuple[tuple[str, str, str], T]] = []
    for e in by_id.values():
        cause = e.causation_id
        if cause is not None and cause in by_id and cause != e.event_id:
            effects.setdefault(cause, []).append(e)
            waiting[e.event_id] = 1
        else:
            heapq.heappush(ready, (e.key(), e))
    out: list[T] = []
    while ready:
        _, e = heapq.heappop(ready)
        out.append(e)
        for effect in effects.pop(e.event_id, ()):
            waiting[effect.event_id] -= 1
            if waiting[effect.event_id] == 0:
                heapq.heappush(ready, (effect.key(), effect))
    if len(out) < len(by_id):
        placed = {e.event_id for e in out}
        out.extend(sorted((e for e in by_id.values() if e.event_id not in placed), key=Entry.key))
    return out
