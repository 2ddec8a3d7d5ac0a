"""Order rules: the only place that decides how an order is priced, how it ends, which step a
pending order waits on, and when its saga is overdue. Standard library only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({Status.COMPLETED, Status.REJECTED, Status.CANCELLED})


class Fact(StrEnum):
    """What the other services report about an order."""

    STOCK_REJECTED = "StockRejected"
    PAYMENT_DECLINED = "PaymentDeclined"
    SHIPMENT_FAILED = "ShipmentFailed"
    SHIPMENT_SCHEDULED = "ShipmentScheduled"
    CANCEL_REQUESTED = "OrderCancellationRequested"
    TIMED_OUT = "TimedOut"  # the orders service's own watchdog: the saga passed its deadline


@dataclass(frozen=True)
class Transition:
    status: Status
    reason: str | None
    failed_step: str | None


_RULES: dict[Fact, tuple[Status, str | None]] = {
    Fact.STOCK_REJECTED: (Status.REJECTED, "inventory"),
    Fact.PAYMENT_DECLINED: (Status.CANCELLED, "payments"),
    Fact.SHIPMENT_FAILED: (Status.CANCELLED, "shipping"),
    Fact.SHIPMENT_SCHEDULED: (Status.COMPLETED, None),
    Fact.CANCEL_REQUESTED: (Status.CANCELLED, None),
    Fact.TIMED_OUT: (Status.CANCELLED, None),  # the failed step is the one it waited on
}


def decide(
    current: Status, fact: Fact, reason: str | None = None, failed_step: str | None = None
) -> Transition | None:
    """The next state, or None when the order already ended (the fact arrived too late).

    Whatever reaches a pending order first wins; the other services compensate the
    effects they took when they see the losing side's terminal event. ``failed_step``
    names the step for a fact that does not imply one (a time-out).
    """
    if current in TERMINAL:
        return None
    status, step = _RULES[fact]
    reason = None if status is Status.COMPLETED else reason
    return Transition(status, reason, step or failed_step)


# --- where a pending order waits, and its deadline --------------------------------------------


class Step(StrEnum):
    """The saga's steps after creation, in order; orders ends the saga after shipping."""

    INVENTORY = "inventory"
    PAYMENTS = "payments"
    SHIPPING = "shipping"


STEPS: tuple[Step, ...] = tuple(Step)


class Progress(StrEnum):
    """Facts that move a pending order on to the next step without ending it."""

    STOCK_RESERVED = "StockReserved"
    PAYMENT_CAPTURED = "PaymentCaptured"


_NEXT_STEP: dict[Progress, Step] = {
    Progress.STOCK_RESERVED: Step.PAYMENTS,
    Progress.PAYMENT_CAPTURED: Step.SHIPPING,
}


@dataclass(frozen=True)
class Waiting:
    """The step a pending order waits on, and since when."""

    step: Step
    since: datetime


def waiting_when_created(created_at: datetime) -> Waiting:
    """A new order waits on inventory to reserve its stock."""
    return Waiting(Step.INVENTORY, created_at)


def advance(
    current: Status, waiting_on: Step | None, progress: Progress, at: datetime
) -> Waiting | None:
    """Where the order waits after ``progress`` (which happened ``at``), or None when that
    changes nothing: the order ended, or it is at that step or beyond already. Facts reach
    orders on different topics in any order (a capture can come before the reservation
    that caused it), so a step only ever moves forward."""
    if current in TERMINAL:
        return None
    step = _NEXT_STEP[progress]
    if waiting_on is not None and STEPS.index(waiting_on) >= STEPS.index(step):
        return None
    return Waiting(step, at)


def deadline(created_at: datetime, allowed: timedelta) -> datetime:
    """When the saga of an order created at ``created_at`` should have ended."""
    return created_at + allowed


def is_overdue(
    current: Status, deadline_at: datetime, stuck_at: datetime | None, now: datetime
) -> bool:
    """A pending order past its deadline that is not flagged stuck (at its current step)."""
    return current is Status.PENDING and stuck_at is None and deadline_at <= now


def time_out_reason(step: Step) -> str:
    return f"timed out waiting on {step.value}"


INT64_MAX = 2**63 - 1  # the contracts' ``long`` and the databases' BIGINT


class TotalTooLarge(ValueError):
    """An order whose total does not fit a 64-bit integer (contracts and tables)."""


def order_total(lines: Iterable[tuple[int, int]]) -> int:
    """Sum of quantity x unit price (cents) over (quantity, unit_price_cents) pairs; raises
    ``TotalTooLarge`` past ``INT64_MAX`` (checked per line, so a sum never grows unbounded)."""
    total = 0
    for quantity, price in lines:
        total += quantity * price
        if total > INT64_MAX:
            raise TotalTooLarge(f"order total exceeds {INT64_MAX} cents")
    return total


# --- pricing: the platform's prices, never the client's ----------------------------------------


@dataclass(frozen=True)
class Requested:
    """An order line as the customer asked for it: the unit price it was shown, if it says."""

    sku: str
    quantity: int
    unit_price_cents: int | None = None


@dataclass(frozen=True)
class PriceProblem:
    """Why one line cannot be priced: ``kind`` is ``unknown_sku`` or ``price_mismatch``."""

    line: int  # index in the order's lines
    sku: str
    kind: str
    message: str


class PricingRefused(ValueError):
    """An order the platform cannot price: a SKU it has no price for, or a price the client
    sent that is not the platform's. Every problem is named; the message joins them."""

    def __init__(self, problems: Sequence[PriceProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.message for p in self.problems))


def price_lines(lines: Sequence[Requested], prices: Mapping[str, int]) -> list[int]:
    """The unit price (cents) of each line, from ``prices`` (the platform's, per SKU).

    A line may omit its price; one that sends a price must send the platform's (a stale or
    forged price is refused, not silently corrected, so the customer is never charged what
    it was not shown). Raises ``PricingRefused`` naming every line that cannot be priced.
    """
    problems: list[PriceProblem] = []
    for i, line in enumerate(lines):
        price = prices.get(line.sku)
        if price is None:
            message = f"unknown SKU {line.sku!r}: the platform has no price for it"
            problems.append(PriceProblem(i, line.sku, "unknown_sku", message))
        elif line.unit_price_cents is not None and line.unit_price_cents != price:
            message = (
                f"SKU {line.sku!r}: unit_price_cents {line.unit_price_cents} is not the "
                f"platform's price {price}"
            )
            problems.append(PriceProblem(i, line.sku, "price_mismatch", message))
    if problems:
        raise PricingRefused(problems)
    return [prices[line.sku] for line in lines]
