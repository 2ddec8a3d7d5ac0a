"""Notification rules: what the customer is told for each way an order can end, and only once.

Pure: standard library only, no I/O. Ids come in from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OrderStatus(StrEnum):
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an order ended, as the terminal event says it."""

    order_id: str
    customer_id: str
    status: OrderStatus
    detail: str  # the shipment id when completed, else the reason given


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    order_id: str
    customer_id: str
    order_status: OrderStatus
    message: str


def message_for(outcome: Outcome) -> str:
    order, detail = outcome.order_id, outcome.detail.strip()
    match outcome.status:
        case OrderStatus.COMPLETED:
            return f"Good news: your order {order} is complete and on its way (shipment {detail})."
        case OrderStatus.REJECTED:
            text = f"Sorry, we could not accept your order {order}"
        case OrderStatus.CANCELLED:
            text = f"Your order {order} was cancelled"
    # A reason may be empty (a customer's own cancellation need not give one).
    return f"{text}: {detail}." if detail else f"{text}."


def notify(outcome: Outcome, already_notified: bool, notification_id: str) -> Notification | None:
    """The notification to send, or None: a customer hears about an order once, whatever
    terminal events follow the first (a late cancel after completion, a redelivery)."""
    if already_notified:
        return None
    return Notification(
        notification_id=notification_id,
        order_id=outcome.order_id,
        customer_id=outcome.customer_id,
        order_status=outcome.status,
        message=message_for(outcome),
    )
