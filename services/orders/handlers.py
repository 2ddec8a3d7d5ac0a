"""Orders handlers: place orders, follow their progress, and turn other services' facts into
terminal states.

Statements are built once with ``bindparam`` placeholders: building one per call costs about
as much CPU as executing it. Bind names of UPDATEs are ``b_<column>`` because SQLAlchemy
reserves column names for the SET clause.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, insert, select, update

from events.envelope import Event, utcnow
from events.models import EventModel
from events.outbox import UnitOfWork
from events.prepared import Prepared
from events.routing import HandlerFn, PermanentError, Router
from schemas.models import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderPlaced,
    OrderRejected,
    PaymentCaptured,
    PaymentDeclined,
    ShipmentFailed,
    ShipmentScheduled,
    StockRejected,
    StockReserved,
)
from services.orders.domain import (
    Fact,
    Progress,
    Status,
    Step,
    advance,
    deadline,
    decide,
    order_total,
    waiting_when_created,
)
from services.orders.tables import orders

log = structlog.get_logger(__name__)

_EXISTS = Prepared(select(orders.c.order_id).where(orders.c.order_id == bindparam("order_id")))
_INSERT = Prepared(insert(orders))
_LOCKED = Prepared(
    select(orders).where(orders.c.order_id == bindparam("order_id")).with_for_update()
)
_THIS_ORDER = orders.c.order_id == bindparam("b_order_id")
_SET_WAITING = Prepared(
    update(orders)
    .where(_THIS_ORDER)
    .values(
        waiting_on=bindparam("b_waiting_on"),
        waiting_since=bindparam("b_waiting_since"),
        stuck_at=None,
        updated_at=bindparam("b_updated_at"),
    )
)
_SET_LATE = Prepared(update(orders).where(_THIS_ORDER).values(late_facts=bindparam("b_late_facts")))
_SET_ENDED = Prepared(
    update(orders)
    .where(_THIS_ORDER)
    .values(
        status=bindparam("b_status"),
        reason=bindparam("b_reason"),
        failed_step=bindparam("b_failed_step"),
        updated_at=bindparam("b_updated_at"),
        waiting_on=None,
        shipment_id=bindparam("b_shipment_id"),
    )
)


async def place_order(uow: UnitOfWork, placed: OrderPlaced, saga_deadline: timedelta) -> bool:
    """Creates the order and emits OrderCreated; False if the order id already exists.

    The order's saga must end within ``saga_deadline`` (the watchdog reports it otherwise).
    """
    if await _EXISTS.first(uow.session, {"order_id": placed.order_id}) is not None:
        return False
    lines = [line.model_dump() for line in placed.lines]
    total = order_total((ln.quantity, ln.unit_price_cents) for ln in placed.lines)
    now = utcnow()
    created = uow.emit(
        OrderCreated(
            order_id=placed.order_id,
            customer_id=placed.customer_id,
            lines=placed.lines,
            total_cents=total,
            shipping_address=placed.shipping_address,
            created_at=now,
        ),
        key=placed.order_id,
    )
    waiting = waiting_when_created(now)
    await _INSERT.run(
        uow.session,
        {
            "order_id": placed.order_id,
            "customer_id": placed.customer_id,
            "status": Status.PENDING,
            "total_cents": total,
            "lines": json.dumps(lines),
            "shipping_address": placed.shipping_address.model_dump_json(),
            "created_at": now,
            "updated_at": now,
            "deadline_at": deadline(now, saga_deadline),
            "waiting_on": waiting.step.value,
            "waiting_since": waiting.since,
            # Events orders emits later on its own (the watchdog's) join the saga's trace.
            "correlation_id": created.correlation_id,
            "traceparent": created.traceparent,
        },
    )
    return True


async def _locked(uow: UnitOfWork, order_id: str) -> Any:
    row = await _LOCKED.first(uow.session, {"order_id": order_id})
    if row is None:
        raise PermanentError(f"unknown order {order_id}")
    return row


async def apply_progress(uow: UnitOfWork, order_id: str, progress: Progress, at: datetime) -> None:
    """Records the step a pending order waits on now (a fact that does not end it)."""
    row = await _locked(uow, order_id)
    current = Step(row["waiting_on"]) if row["waiting_on"] else None
    waiting = advance(Status(row["status"]), current, progress, at)
    if waiting is None:
        return  # ended already, or past that step (the facts came in another order)
    # stuck_at was about the step it left: cleared (by _SET_WAITING), so the watchdog can
    # flag it again at the new step if the saga is still overdue.
    await _SET_WAITING.run(
        uow.session,
        {
            "b_order_id": order_id,
            "b_waiting_on": waiting.step.value,
            "b_waiting_since": waiting.since,
            "b_updated_at": utcnow(),
        },
    )


async def apply_fact(
    uow: UnitOfWork,
    order_id: str,
    fact: Fact,
    reason: str | None = None,
    shipment_id: str | None = None,
    failed_step: str | None = None,
) -> dict[str, Any]:
    row = await _locked(uow, order_id)
    transition = decide(Status(row["status"]), fact, reason, failed_step)
    if transition is None:
        log.info(
            "fact after the order ended", order_id=order_id, fact=fact.value, status=row["status"]
        )
        late = [*json.loads(row["late_facts"]), fact.value]
        await _SET_LATE.run(uow.session, {"b_order_id": order_id, "b_late_facts": json.dumps(late)})
        return dict(row)
    now = utcnow()
    values = {
        "status": transition.status,
        "reason": transition.reason,
        "failed_step": transition.failed_step,
        "updated_at": now,
        "waiting_on": None,  # an ended order waits on nothing (and leaves the watchdog's index)
    }
    values["shipment_id"] = shipment_id or row["shipment_id"]
    await _SET_ENDED.run(
        uow.session,
        {
            "b_order_id": order_id,
            "b_status": values["status"],
            "b_reason": values["reason"],
            "b_failed_step": values["failed_step"],
            "b_updated_at": now,
            "b_shipment_id": values["shipment_id"],
        },
    )
    _emit_terminal(uow, {**row, **values}, now)
    log.info(
        "order ended",
        order_id=order_id,
        status=str(transition.status),
        failed_step=transition.failed_step,
        reason=transition.reason,
    )
    return {**row, **values}


def _emit_terminal(uow: UnitOfWork, order: dict[str, Any], now: Any) -> None:
    oid, cid, reason = order["order_id"], order["customer_id"], order["reason"] or ""
    if order["status"] == Status.COMPLETED:
        uow.emit(
            OrderCompleted(
                order_id=oid,
                customer_id=cid,
                total_cents=order["total_cents"],
                shipment_id=order["shipment_id"],
                completed_at=now,
            ),
            key=oid,
        )
    elif order["status"] == Status.REJECTED:
        uow.emit(
            OrderRejected(
                order_id=oid,
                customer_id=cid,
                reason=reason,
                failed_step=order["failed_step"],
                rejected_at=now,
            ),
            key=oid,
        )
    else:
        uow.emit(
            OrderCancelled(
                order_id=oid,
                customer_id=cid,
                reason=reason,
                failed_step=order["failed_step"],
                cancelled_at=now,
            ),
            key=oid,
        )


# --- handlers -------------------------------------------------------------------------------


async def on_cancel_requested(uow: UnitOfWork, event: Event[OrderCancellationRequested]) -> None:
    reason = event.payload.reason or "cancelled by the customer"
    await apply_fact(uow, event.payload.order_id, Fact.CANCEL_REQUESTED, reason)


async def on_stock_reserved(uow: UnitOfWork, event: Event[StockReserved]) -> None:
    p = event.payload
    await apply_progress(uow, p.order_id, Progress.STOCK_RESERVED, p.reserved_at)


async def on_payment_captured(uow: UnitOfWork, event: Event[PaymentCaptured]) -> None:
    p = event.payload
    await apply_progress(uow, p.order_id, Progress.PAYMENT_CAPTURED, p.captured_at)


async def on_stock_rejected(uow: UnitOfWork, event: Event[StockRejected]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.STOCK_REJECTED, event.payload.reason)


async def on_payment_declined(uow: UnitOfWork, event: Event[PaymentDeclined]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.PAYMENT_DECLINED, event.payload.reason)


async def on_shipment_failed(uow: UnitOfWork, event: Event[ShipmentFailed]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.SHIPMENT_FAILED, event.payload.reason)


async def on_shipment_scheduled(uow: UnitOfWork, event: Event[ShipmentScheduled]) -> None:
    await apply_fact(
        uow, event.payload.order_id, Fact.SHIPMENT_SCHEDULED, shipment_id=event.payload.shipment_id
    )


HANDLERS: dict[str, tuple[type[EventModel], HandlerFn]] = {
    model.event_type: (model, fn)
    for model, fn in (
        (OrderCancellationRequested, on_cancel_requested),
        (StockReserved, on_stock_reserved),
        (PaymentCaptured, on_payment_captured),
        (StockRejected, on_stock_rejected),
        (PaymentDeclined, on_payment_declined),
        (ShipmentFailed, on_shipment_failed),
        (ShipmentScheduled, on_shipment_scheduled),
    )
}


def build_router(saga_deadline: timedelta) -> Router:
    """The handlers, with orders placed by event given ``saga_deadline`` to end."""
    router = Router()

    @router.on(OrderPlaced)
    async def on_order_placed(uow: UnitOfWork, event: Event[OrderPlaced]) -> None:
        await place_order(uow, event.payload, saga_deadline)

    for event_type, (model, fn) in HANDLERS.items():
        router.add(event_type, fn, model)
    return router
