"""What each of an order's events says about the order: its patch of the order's view
(``domain.RULES`` joins them), one function per event type, by name in ``ORDER_EVENTS``.

Payloads are the decoded Avro records (dicts; times are aware UTC datetimes): the batch
function takes them without a pydantic model each (see ``Projection.on_batch``). Like
``collect``, no SQLAlchemy and no service code: a replay's reader processes import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from events.envelope import Event
from services.query.domain import Created, Stuck, Terminal, iso
from services.query.figures import Decline

if TYPE_CHECKING:
    from services.query.collect import Batch

Patch = dict[str, Any]
Payload = dict[str, Any]
ToPatch = Callable[[Payload, Event[Payload], "Batch"], Patch]


def order_created(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "created": Created(iso(p["created_at"]), p["total_cents"], json.dumps(p["lines"])),
    }


def order_completed(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "terminal": Terminal(iso(p["completed_at"]), e.event_id, "COMPLETED"),
        "shipment_id": p["shipment_id"],
        "stock_status": "SHIPPED",  # inventory ships a held reservation on OrderCompleted
    }


def order_rejected(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    at = iso(p["rejected_at"])
    terminal = Terminal(at, e.event_id, "REJECTED", p["reason"], p["failed_step"])
    return {"customer_id": p["customer_id"], "terminal": terminal}


def order_cancelled(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    at = iso(p["cancelled_at"])
    terminal = Terminal(at, e.event_id, "CANCELLED", p["reason"], p["failed_step"])
    return {"customer_id": p["customer_id"], "terminal": terminal}


def order_stuck(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    stuck = Stuck(
        iso(p["detected_at"]),
        e.event_id,
        p["waiting_on"],
        iso(p["waiting_since"]),
        iso(p["deadline_at"]),
    )
    return {"customer_id": p["customer_id"], "stuck": stuck}


def stock_reserved(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    lines = tuple((line["sku"], line["quantity"]) for line in p["lines"])
    return {"customer_id": p["customer_id"], "stock_status": "RESERVED", "stock_lines": lines}


def _status_with_reason(status_field: str, status: str, reason_field: str) -> ToPatch:
    """An event that sets one of the order's statuses and gives its reason (the same
    patch for a rejected or released reservation and a failed shipment)."""

    def patch(p: Payload, e: Event[Payload], _: Batch) -> Patch:
        return {"customer_id": p["customer_id"], status_field: status, reason_field: p["reason"]}

    return patch


stock_rejected = _status_with_reason("stock_status", "REJECTED", "stock_reason")
stock_released = _status_with_reason("stock_status", "RELEASED", "stock_reason")
shipment_failed = _status_with_reason("shipment_status", "FAILED", "shipment_reason")


def payment_captured(p: Payload, e: Event[Payload], batch: Batch) -> Patch:
    batch.money(p["customer_id"], iso(p["captured_at"]))
    return {
        "customer_id": p["customer_id"],
        "payment_id": p["payment_id"],
        "payment_status": "CAPTURED",
        "captured_cents": p["amount_cents"],
    }


def payment_declined(p: Payload, e: Event[Payload], batch: Batch) -> Patch:
    decline = Decline(iso(p["declined_at"]), e.event_id, p["balance_cents"])
    batch.decline(p["customer_id"], decline)
    return {
        "customer_id": p["customer_id"],
        "payment_status": "DECLINED",
        "payment_reason": p["reason"],
    }


def payment_refunded(p: Payload, e: Event[Payload], batch: Batch) -> Patch:
    batch.money(p["customer_id"], iso(p["refunded_at"]))
    return {
        "customer_id": p["customer_id"],
        "payment_id": p["payment_id"],
        "payment_status": "REFUNDED",
        "refunded_cents": p["amount_cents"],
        "payment_reason": p["reason"],
    }


def shipment_scheduled(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "shipment_id": p["shipment_id"],
        "shipment_status": "SCHEDULED",
        "carrier": p["carrier"],
    }


def shipment_cancelled(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "shipment_id": p["shipment_id"],
        "shipment_status": "CANCELLED",
        "shipment_reason": p["reason"],
    }


def customer_notified(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {"customer_id": p["customer_id"], "notified_at": iso(p["notified_at"])}


# By event type name, not model class: a replay's reader processes import this module, and
# the pydantic models would be most of their start-up (``projections`` checks the names).
ORDER_EVENTS: Final[dict[str, ToPatch]] = {
    "OrderCreated": order_created,
    "OrderCompleted": order_completed,
    "OrderRejected": order_rejected,
    "OrderCancelled": order_cancelled,
    "OrderStuck": order_stuck,
    "StockReserved": stock_reserved,
    "StockRejected": stock_rejected,
    "StockReleased": stock_released,
    "PaymentCaptured": payment_captured,
    "PaymentDeclined": payment_declined,
    "PaymentRefunded": payment_refunded,
    "ShipmentScheduled": shipment_scheduled,
    "ShipmentFailed": shipment_failed,
    "ShipmentCancelled": shipment_cancelled,
    "CustomerNotified": customer_notified,
}
