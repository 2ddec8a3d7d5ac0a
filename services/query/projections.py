"""The ``query`` projection: one runner over every saga topic the read side needs.

Each handler turns its event into a partial order view (see ``domain``) plus a timeline
row, or into a deposit or restock, and leaves them in the batch's ``Batch``
(``collect_events``); the batch writes everything just before its transaction commits.
Every value comes from the events (their own times, never the clock), so a replay rebuilds
the very same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from events.envelope import Event
from events.models import EventModel
from events.projection import Projection
from schemas.models import (
    CustomerNotified,
    FundsDeposited,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderRejected,
    OrderStuck,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
    StockRejected,
    StockReleased,
    StockReserved,
    StockRestocked,
)
from services.query.batch import Batch, flush_building, write_batch
from services.query.domain import Created, Decline, Stuck, Terminal, iso
from services.query.tables import define_tables

NAME: Final = "query"
TOPICS: Final = (
    "orders.events",
    "inventory.events",
    "inventory.requests",
    "payments.events",
    "payments.requests",
    "shipping.events",
    "notifications.events",
)

Patch = dict[str, Any]
Payload = dict[str, Any]
ToPatch = Callable[[Payload, Event[Payload], Batch], Patch]


# --- one function per event: what it says about its order (see domain.RULES) --------------
# Payloads are the decoded Avro records (dicts; times are aware UTC datetimes): the batch
# function takes them without a pydantic model each (see ``Projection.on_batch``).


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


def stock_rejected(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "stock_status": "REJECTED",
        "stock_reason": p["reason"],
    }


def stock_released(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "stock_status": "RELEASED",
        "stock_reason": p["reason"],
    }


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


def shipment_failed(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "customer_id": p["customer_id"],
        "shipment_status": "FAILED",
        "shipment_reason": p["reason"],
    }


def shipment_cancelled(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {
        "shipment_id": p["shipment_id"],
        "shipment_status": "CANCELLED",
        "shipment_reason": p["reason"],
    }


def customer_notified(p: Payload, e: Event[Payload], _: Batch) -> Patch:
    return {"customer_id": p["customer_id"], "notified_at": iso(p["notified_at"])}


ORDER_EVENTS: Final[dict[type[EventModel], ToPatch]] = {
    OrderCreated: order_created,
    OrderCompleted: order_completed,
    OrderRejected: order_rejected,
    OrderCancelled: order_cancelled,
    OrderStuck: order_stuck,
    StockReserved: stock_reserved,
    StockRejected: stock_rejected,
    StockReleased: stock_released,
    PaymentCaptured: payment_captured,
    PaymentDeclined: payment_declined,
    PaymentRefunded: payment_refunded,
    ShipmentScheduled: shipment_scheduled,
    ShipmentFailed: shipment_failed,
    ShipmentCancelled: shipment_cancelled,
    CustomerNotified: customer_notified,
}
_PATCHES: Final[dict[str, ToPatch]] = {m.event_type: fn for m, fn in ORDER_EVENTS.items()}


def order_event(batch: Batch, event: Event[Payload]) -> None:
    """An order's event: its patch of the order's view and its timeline row."""
    env = event.envelope
    at = iso(env.occurred_at)
    p = event.payload
    order_id = p["order_id"]
    patch = _PATCHES[env.event_type](p, event, batch)
    patch["updated_at"] = at
    row = (  # in the timeline table's column order
        order_id,
        env.event_id,
        env.event_type,
        env.producer,
        at,
        env.causation_id,
        env.correlation_id,
        env.traceparent,
        event.topic,
        event.partition,
        event.offset,
    )
    batch.order(order_id, patch, row)


def funds_deposited(batch: Batch, event: Event[Payload]) -> None:
    p = event.payload
    batch.deposit(p["deposit_id"], p["customer_id"], p["amount_cents"], iso(p["deposited_at"]))


def stock_restocked(batch: Batch, event: Event[Payload]) -> None:
    p = event.payload
    batch.restock(p["restock_id"], p["sku"], p["quantity"])


COLLECT: Final[dict[str, Callable[[Batch, Event[Payload]], None]]] = {
    **{model.event_type: order_event for model in ORDER_EVENTS},
    FundsDeposited.event_type: funds_deposited,
    StockRestocked.event_type: stock_restocked,
}


def collect(batch: Batch, event: Event[Payload]) -> None:
    """What one event adds to its transaction's batch (written just before the commit)."""
    COLLECT[event.event_type](batch, event)


def collect_events(events: list[Event[Payload]]) -> Batch:
    """A batch of events folded in memory (the projection's ``collect``: no I/O, pickles)."""
    batch = Batch()
    collectors = COLLECT
    for event in events:
        collectors[event.envelope.event_type](batch, event)
    return batch


def build_projection(prefix: str = "") -> Projection:
    """The projection over the topics of one environment (``TOPIC_PREFIX``)."""
    projection = Projection(
        NAME, [prefix + t for t in TOPICS], define_tables, flush_building=flush_building
    )
    models: list[type[EventModel]] = [*ORDER_EVENTS, FundsDeposited, StockRestocked]
    projection.on_batch(models, collect_events, write_batch)
    return projection


# Every projection the replay command can rebuild, by name.
PROJECTIONS: Final[dict[str, Callable[[str], Projection]]] = {NAME: build_projection}
