"""The replay benchmark's input: a saga history of N events, a realistic mix of the saga's
paths (success, out of stock, declined payment, unserviceable address, customer cancel) after
seeding deposits and restocks, with full envelopes (correlation, causation, traceparent),
encoded as the services' outboxes write them, and the order statuses a correct projection
shows for it."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events.codec import AvroCodec
from events.envelope import Envelope

SKUS = 40
CUSTOMERS = 400
# (path, weight): how often each saga path occurs in the mix.
PATHS = (
    ("success", 70),
    ("out of stock", 10),
    ("insufficient funds", 10),
    ("unserviceable address", 5),
    ("cancelled", 5),
)
ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "1",
    "country": "DE",
}


@dataclass
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class History:
    """The encoded events and what a correct projection must show for them."""

    messages: list[Message] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    events: int = 0


# Each path's events after OrderCreated: (step, event type, emitting service, cause), the cause
# being the step whose event made the service emit this one.
FLOWS: dict[str, list[tuple[int, str, str, int]]] = {
    "success": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentCaptured", "payments", 1),
        (3, "ShipmentScheduled", "shipping", 2),
        (4, "OrderCompleted", "orders", 3),
        (5, "CustomerNotified", "notifications", 4),
    ],
    "out of stock": [
        (1, "StockRejected", "inventory", 0),
        (2, "OrderRejected", "orders", 1),
        (3, "CustomerNotified", "notifications", 2),
    ],
    "insufficient funds": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentDeclined", "payments", 1),
        (3, "StockReleased", "inventory", 2),
        (3, "OrderCancelled", "orders", 2),
        (4, "CustomerNotified", "notifications", 4),
    ],
    "unserviceable address": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentCaptured", "payments", 1),
        (3, "ShipmentFailed", "shipping", 2),
        (4, "PaymentRefunded", "payments", 3),
        (4, "OrderCancelled", "orders", 3),
        (5, "StockReleased", "inventory", 4),
        (5, "CustomerNotified", "notifications", 5),
    ],
    "cancelled": [
        (1, "StockReserved", "inventory", 0),
        (2, "OrderCancelled", "orders", 1),
        (3, "StockReleased", "inventory", 2),
        (3, "CustomerNotified", "notifications", 2),
    ],
}
STATUS = {
    "success": "COMPLETED",
    "out of stock": "REJECTED",
    "insufficient funds": "CANCELLED",
    "unserviceable address": "CANCELLED",
    "cancelled": "CANCELLED",
}
FAILED_STEP = {"insufficient funds": "payments", "unserviceable address": "shipping"}


class _Writer:
    """Encodes events with envelopes as the services' outboxes write them."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.history = History()

    def emit(
        self,
        event_type: str,
        payload: dict[str, Any],
        key: str,
        producer: str,
        at: datetime,
        cause: Envelope | None = None,
        trace: str | None = None,
    ) -> Envelope:
        event_id = str(uuid.uuid4())
        env = Envelope(
            event_id=event_id,
            event_type=event_type,
            schema_version=self.codec.catalogue.latest(event_type).version,
            occurred_at=at,
            producer=producer,
            correlation_id=cause.correlation_id if cause else event_id,
            key=key,
            causation_id=cause.event_id if cause else None,
            traceparent=f"00-{trace}-{uuid.uuid4().hex[:16]}-01" if trace else None,
        )
        topic = self.codec.catalogue.topic_for(event_type)
        value = self.codec.encode(event_type, payload)
        self.history.messages.append(Message(topic, key.encode(), value, env.to_headers()))
        self.history.events += 1
        return env


def saga_history(codec: AvroCodec, n: int, seed: int = 7) -> History:
    """At least ``n`` events: seeding first, then orders overlapping in time."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    w = _Writer(codec)
    skus = [f"sku-{i:03d}" for i in range(SKUS)]
    customers = [f"cust-{i:04d}" for i in range(CUSTOMERS)]
    # The owners' facts of the seeding (what the query projection counts), as inventory and
    # payments emit them for the warehouse's and the bank's requests.
    for sku in skus:
        payload = {"restock_id": str(uuid.uuid4()), "sku": sku, "quantity": 10**6}
        times = {"restocked_at": start, "received_at": start}
        w.emit("StockReceived", {**payload, **times}, sku, "inventory", start)
    for cust in customers:
        payload = {"deposit_id": str(uuid.uuid4()), "customer_id": cust, "amount_cents": 10**9}
        times = {"deposited_at": start, "credited_at": start}
        w.emit("FundsCredited", {**payload, **times}, cust, "payments", start)
    paths = [p for p, _ in PATHS]
    weights = [wt for _, wt in PATHS]
    i = 0
    while w.history.events < n:
        at = start + timedelta(milliseconds=10 * i)
        path = rng.choices(paths, weights)[0]
        _order(w, rng, path, rng.choice(customers), rng.sample(skus, rng.randint(1, 3)), at)
        i += 1
    # Orders overlap in time: publish in time order, as the services would have.
    w.history.messages.sort(key=lambda m: dict(m.headers)["occurred-at"])
    return w.history


def _order(
    w: _Writer, rng: random.Random, path: str, cust: str, skus: list[str], at: datetime
) -> None:
    order_id = str(uuid.uuid4())
    trace = uuid.uuid4().hex
    step = timedelta(milliseconds=rng.randint(5, 40))
    quantities = [rng.randint(1, 3) for _ in skus]
    lines = [
        {"sku": s, "quantity": q, "unit_price_cents": 250}
        for s, q in zip(skus, quantities, strict=True)
    ]
    total = 250 * sum(quantities)
    status = STATUS[path]
    facts = {
        "lines": lines,
        "stock_lines": [{"sku": ln["sku"], "quantity": ln["quantity"]} for ln in lines],
        "total": total,
        "status": status,
        "failed_step": FAILED_STEP.get(path),
        "payment_id": str(uuid.uuid4()),
        "shipment_id": str(uuid.uuid4()),
    }
    created = {"lines": lines, "total_cents": total, "shipping_address": ADDRESS, "created_at": at}
    base = {"order_id": order_id, "customer_id": cust}
    sent = [w.emit("OrderCreated", {**base, **created}, order_id, "orders", at, None, trace)]
    for k, event_type, producer, cause in FLOWS[path]:
        when = at + k * step
        payload = {**base, **_payload(event_type, facts, when)}
        sent.append(w.emit(event_type, payload, order_id, producer, when, sent[cause], trace))
    w.history.orders += 1
    w.history.statuses[status] = w.history.statuses.get(status, 0) + 1


def _payload(event_type: str, f: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The fields of a saga event beyond order_id and customer_id."""
    reason = "insufficient funds" if f["failed_step"] == "payments" else "address not serviceable"
    if f["failed_step"] is None:
        reason = "changed my mind"
    short = {"sku": f["lines"][0]["sku"], "requested": 1, "available": 0}
    body: dict[str, dict[str, Any]] = {
        "StockReserved": {
            "lines": f["stock_lines"],
            "total_cents": f["total"],
            "shipping_address": ADDRESS,
            "reserved_at": at,
        },
        "StockRejected": {"reason": "out of stock", "shortages": [short], "rejected_at": at},
        "StockReleased": {
            "lines": f["stock_lines"],
            "reason": reason,
            "failed_step": f["failed_step"],
            "released_at": at,
        },
        "PaymentCaptured": {
            "payment_id": f["payment_id"],
            "amount_cents": f["total"],
            "shipping_address": ADDRESS,
            "captured_at": at,
        },
        "PaymentDeclined": {
            "amount_cents": f["total"],
            "reason": reason,
            "balance_cents": 0,
            "declined_at": at,
        },
        "PaymentRefunded": {
            "payment_id": f["payment_id"],
            "amount_cents": f["total"],
            "reason": reason,
            "failed_step": f["failed_step"],
            "refunded_at": at,
        },
        "ShipmentScheduled": {
            "shipment_id": f["shipment_id"],
            "carrier": "DHL",
            "shipping_address": ADDRESS,
            "scheduled_at": at,
        },
        "ShipmentFailed": {"reason": reason, "failed_at": at},
        "OrderCompleted": {
            "total_cents": f["total"],
            "shipment_id": f["shipment_id"],
            "completed_at": at,
        },
        "OrderRejected": {"reason": "out of stock", "failed_step": "inventory", "rejected_at": at},
        "OrderCancelled": {"reason": reason, "failed_step": f["failed_step"], "cancelled_at": at},
        "CustomerNotified": {
            "notification_id": str(uuid.uuid4()),
            "order_status": f["status"],
            "message": f"your order is {f['status'].lower()}",
            "notified_at": at,
        },
    }
    return body[event_type]
