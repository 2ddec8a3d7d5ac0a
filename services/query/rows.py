"""Read models <-> table rows (tuples in the tables' column order, see ``tables``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from services.query.domain import PENDING, Created, Stuck, Terminal, View, stuck_now
from services.query.figures import Customer, Decline, Sku

_json_text = json.encoder.encode_basestring_ascii  # what json.dumps quotes strings with


def lines_json(lines: Iterable[tuple[str, int]]) -> str:
    """``json.dumps`` of [sku, quantity] pairs, character for character, at a third of its
    cost (it builds an encoder per call); the flush of a replay makes one per order."""
    return "[" + ", ".join([f"[{_json_text(sku)}, {int(q)}]" for sku, q in lines]) + "]"


def order_row(order_id: str, v: View) -> tuple[Any, ...]:
    c: Created | None = v.get("created")
    t: Terminal | None = v.get("terminal")
    k: Stuck | None = v.get("stuck")
    holds = stuck_now(v)
    lines = v.get("stock_lines")
    return (
        order_id,
        v.get("customer_id"),
        # The terminal status is kept even before OrderCreated is seen (readers only show
        # orders with a created_at), so that the row alone rebuilds the view.
        t.status if t else (PENDING if c else None),
        c.total_cents if c else None,
        c.lines if c else None,
        c.created_at if c else None,
        v["updated_at"],
        t.at if t else None,
        t.event_id if t else None,
        t.reason if t else None,
        t.failed_step if t else None,
        v.get("payment_id"),
        v.get("payment_status"),
        v.get("captured_cents"),
        v.get("refunded_cents"),
        v.get("payment_reason"),
        v.get("shipment_id"),
        v.get("shipment_status"),
        v.get("carrier"),
        v.get("shipment_reason"),
        v.get("stock_status"),
        None if lines is None else lines_json(lines),
        v.get("stock_reason"),
        v.get("notified_at"),
        k.detected_at if k else None,
        k.event_id if k else None,
        k.waiting_on if k else None,
        k.waiting_since if k else None,
        k.deadline_at if k else None,
        holds.detected_at if holds else None,  # derived: what the stuck filters read
    )


_PLAIN = (
    (1, "customer_id"),
    (6, "updated_at"),
    (11, "payment_id"),
    (12, "payment_status"),
    (13, "captured_cents"),
    (14, "refunded_cents"),
    (15, "payment_reason"),
    (16, "shipment_id"),
    (17, "shipment_status"),
    (18, "carrier"),
    (19, "shipment_reason"),
    (20, "stock_status"),
    (22, "stock_reason"),
    (23, "notified_at"),
)


def order_view(row: Any) -> View:
    """The view a stored row holds (only known fields, as ``join`` makes them)."""
    v: View = {name: row[i] for i, name in _PLAIN if row[i] is not None}
    if row[5] is not None:
        v["created"] = Created(row[5], row[3], row[4])
    if row[7] is not None:
        v["terminal"] = Terminal(row[7], row[8], row[2], row[9], row[10])
    if row[21] is not None:
        v["stock_lines"] = tuple((sku, int(q)) for sku, q in json.loads(row[21]))
    if row[24] is not None:
        v["stuck"] = Stuck(row[24], row[25], row[26], row[27], row[28])
    return v


def customer_row(c: Customer) -> tuple[Any, ...]:
    d = c.last_decline
    return (
        c.customer_id,
        c.orders_count,
        c.deposited_cents,
        c.captured_cents,
        c.refunded_cents,
        c.balance_cents,
        c.balance_as_of,
        d.at if d else None,
        d.event_id if d else None,
        d.balance_cents if d else None,
    )


def customer_from_row(r: Any) -> Customer:
    decline = Decline(r[7], r[8], r[9]) if r[7] is not None else None
    return Customer(r[0], r[1], r[2], r[3], r[4], r[6], decline)


def sku_row(s: Sku) -> tuple[Any, ...]:
    return (s.sku, s.received, s.reserved, s.shipped, s.on_hand)


def sku_from_row(r: Any) -> Sku:
    return Sku(r[0], r[1], r[2], r[3])


def created_then_id(row: tuple[Any, ...]) -> tuple[str, str]:
    """An order row's place in creation order: the list indexes lead with created_at, so
    rows inserted in this order append near each other instead of all over the indexes."""
    return (row[5] or "", row[0])  # created_at (NULL until OrderCreated is seen), order_id
