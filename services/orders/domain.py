"""Order rules: the only place that decides how an order ends. Standard library only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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
}


def decide(current: Status, fact: Fact, reason: str | None = None) -> Transition | None:
    """The next state, or None when the order already ended (the fact arrived too late).

    Whatever reaches a pending order first wins; the other services compensate the
    effects they took when they see the losing side's terminal event.
    """
    if current in TERMINAL:
        return None
    status, failed_step = _RULES[fact]
    return Transition(status, None if status is Status.COMPLETED else reason, failed_step)


def order_total(lines: Iterable[tuple[int, int]]) -> int:
    """Sum of quantity x unit price (cents) over (quantity, unit_price_cents) pairs."""
    return sum(quantity * price for quantity, price in lines)
