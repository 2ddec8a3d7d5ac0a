"""What analytics counts: saga events turned into facts, and facts added up per window.

Pure: standard library only, no I/O. Times are epoch seconds, amounts minor units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.analytics.histogram import DurationHistogram


class Kind(StrEnum):
    PLACED = "placed"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    CAPTURED = "captured"
    REFUNDED = "refunded"


# An order counts as placed when the orders service accepts it (OrderCreated opens the
# saga, whether it came over HTTP or as an OrderPlaced request); its duration runs from
# there to the one terminal event the orders service emits.
START = "OrderCreated"
_TERMINAL = {
    "OrderCompleted": Kind.COMPLETED,
    "OrderRejected": Kind.REJECTED,
    "OrderCancelled": Kind.CANCELLED,
}
_MONEY = {"PaymentCaptured": Kind.CAPTURED, "PaymentRefunded": Kind.REFUNDED}
COUNTED = frozenset({START, *_TERMINAL, *_MONEY})

# A window's sums stay within a 64-bit integer (what dashboards and JSON readers of other
# languages hold): an event that would pass it is refused (``WindowOverflow``) and skipped.
INT64_MAX = 2**63 - 1


class WindowOverflow(ValueError):
    """An amount that would push a window's sum past ``INT64_MAX``."""


MAX_REASONS = 32  # distinct failure reasons kept per window; the rest count as OTHER
OTHER = "other"
UNSPECIFIED = "unspecified"
_REASON_LEN = 80


@dataclass(frozen=True, slots=True)
class Fact:
    kind: Kind
    amount_cents: int = 0
    reason: str | None = None
    duration_ms: float | None = None


def is_terminal(event_type: str) -> bool:
    return event_type in _TERMINAL


def reason_category(reason: str) -> str:
    """Services write reasons as "<category>: <details>" (e.g. "insufficient stock: SKU-1
    (requested 3, available 1)"); counting the category keeps per-SKU or per-address
    details from turning every failure into a reason of its own."""
    head = reason.split(":", 1)[0].strip()
    return head[:_REASON_LEN] or UNSPECIFIED


def saga_duration_ms(started_at: float | None, ended_at: float) -> float | None:
    """None when the start was not seen (analytics began after it). Clocks of different
    services may disagree by a little, so a negative gap counts as zero."""
    if started_at is None:
        return None
    return max(0.0, (ended_at - started_at) * 1000)


def fact_of(
    event_type: str, payload: Mapping[str, Any], *, duration_ms: float | None = None
) -> Fact | None:
    """The fact an event contributes, or None for an event analytics does not count."""
    if event_type == START:
        return Fact(Kind.PLACED)
    if event_type in _TERMINAL:
        kind = _TERMINAL[event_type]
        reason = None if kind is Kind.COMPLETED else reason_category(str(payload["reason"]))
        return Fact(kind, reason=reason, duration_ms=duration_ms)
    if event_type in _MONEY:
        return Fact(_MONEY[event_type], amount_cents=int(payload["amount_cents"]))
    return None


@dataclass
class WindowStats:
    """One window's totals (or a part of them: one per source partition, merged on read)."""

    placed: int = 0
    completed: int = 0
    rejected: int = 0
    cancelled: int = 0
    captured_cents: int = 0
    refunded_cents: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    durations: DurationHistogram = field(default_factory=DurationHistogram)

    def add(self, fact: Fact) -> None:
        match fact.kind:
            case Kind.PLACED:
                self.placed += 1
            case Kind.COMPLETED:
                self.completed += 1
            case Kind.REJECTED:
                self.rejected += 1
            case Kind.CANCELLED:
                self.cancelled += 1
            case Kind.CAPTURED:
                self.captured_cents = _checked_sum(self.captured_cents, fact.amount_cents)
            case Kind.REFUNDED:
                self.refunded_cents = _checked_sum(self.refunded_cents, fact.amount_cents)
        if fact.reason is not None:
            self._count_reason(fact.reason, 1)
        if fact.duration_ms is not None:
            self.durations.add(fact.duration_ms)

    def merge(self, other: WindowStats) -> None:
        self.placed += other.placed
        self.completed += other.completed
        self.rejected += other.rejected
        self.cancelled += other.cancelled
        # Parts of one window (one per partition) each fit; their sum is shown saturated
        # rather than failing the read.
        self.captured_cents = min(self.captured_cents + other.captured_cents, INT64_MAX)
        self.refunded_cents = min(self.refunded_cents + other.refunded_cents, INT64_MAX)
        for reason, n in sorted(other.failure_reasons.items()):
            self._count_reason(reason, n)
        self.durations.merge(other.durations)

    def _count_reason(self, reason: str, n: int) -> None:
        reasons = self.failure_reasons
        # Bounded: a window keeps its size whatever customers write as a cancel reason.
        if reason not in reasons and len(reasons.keys() - {OTHER}) >= MAX_REASONS - 1:
            reason = OTHER
        reasons[reason] = reasons.get(reason, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "placed": self.placed,
            "completed": self.completed,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "captured_cents": self.captured_cents,
            "refunded_cents": self.refunded_cents,
            "failure_reasons": dict(self.failure_reasons),
            "durations": self.durations.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> WindowStats:
        if not doc:
            return cls()
        return cls(
            placed=int(doc.get("placed", 0)),
            completed=int(doc.get("completed", 0)),
            rejected=int(doc.get("rejected", 0)),
            cancelled=int(doc.get("cancelled", 0)),
            captured_cents=int(doc.get("captured_cents", 0)),
            refunded_cents=int(doc.get("refunded_cents", 0)),
            failure_reasons={str(k): int(v) for k, v in doc.get("failure_reasons", {}).items()},
            durations=DurationHistogram.from_json(doc.get("durations", {})),
        )


def _checked_sum(total: int, amount: int) -> int:
    if amount < 0 or total + amount > INT64_MAX:
        raise WindowOverflow(f"amount {amount} would take a window's sum {total} past {INT64_MAX}")
    return total + amount
