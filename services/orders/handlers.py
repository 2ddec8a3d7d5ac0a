"""Orders handlers: place orders, and turn other services' facts into terminal states."""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy import insert, select, update

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.routing import PermanentError, Router
from schemas.models import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderPlaced,
    OrderRejected,
    PaymentDeclined,
    ShipmentFailed,
    ShipmentScheduled,
    StockRejected,
)
from services.orders.domain import Fact, Status, decide, order_total
from services.orders.tables import orders

router = Router()
log = structlog.get_logger(__name__)


async def place_order(uow: UnitOfWork, placed: OrderPlaced) -> bool:
    """Creates the order and emits OrderCreated; False if the order id already exists."""
    existing = await uow.session.execute(
        select(orders.c.order_id).where(orders.c.order_id == placed.order_id)
    )
    if existing.first() is not None:
        return False
    lines = [line.model_dump() for line in placed.lines]
    total = order_total((ln.quantity, ln.unit_price_cents) for ln in placed.lines)
    now = utcnow()
    await uow.session.execute(
        insert(orders).values(
            order_id=placed.order_id,
            customer_id=placed.customer_id,
            status=Status.PENDING,
            total_cents=total,
            lines=json.dumps(lines),
            shipping_address=placed.shipping_address.model_dump_json(),
            created_at=now,
            updated_at=now,
        )
    )
    uow.emit(
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
    return True


async def apply_fact(
    uow: UnitOfWork,
    order_id: str,
    fact: Fact,
    reason: str | None = None,
    shipment_id: str | None = None,
) -> dict[str, Any]:
    row = (
        (
            await uow.session.execute(
                select(orders).where(orders.c.order_id == order_id).with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise PermanentError(f"unknown order {order_id}")
    transition = decide(Status(row["status"]), fact, reason)
    if transition is None:
        log.info(
            "fact after the order ended", order_id=order_id, fact=fact.value, status=row["status"]
        )
        late = [*json.loads(row["late_facts"]), fact.value]
        await uow.session.execute(
            update(orders).where(orders.c.order_id == order_id).values(late_facts=json.dumps(late))
        )
        return dict(row)
    now = utcnow()
    values = {
        "status": transition.status,
        "reason": transition.reason,
        "failed_step": transition.failed_step,
        "updated_at": now,
    }
    if shipment_id:
        values["shipment_id"] = shipment_id
    await uow.session.execute(update(orders).where(orders.c.order_id == order_id).values(**values))
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


@router.on(OrderPlaced)
async def on_order_placed(uow: UnitOfWork, event: Event[OrderPlaced]) -> None:
    await place_order(uow, event.payload)


@router.on(OrderCancellationRequested)
async def on_cancel_requested(uow: UnitOfWork, event: Event[OrderCancellationRequested]) -> None:
    reason = event.payload.reason or "cancelled by the customer"
    await apply_fact(uow, event.payload.order_id, Fact.CANCEL_REQUESTED, reason)


@router.on(StockRejected)
async def on_stock_rejected(uow: UnitOfWork, event: Event[StockRejected]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.STOCK_REJECTED, event.payload.reason)


@router.on(PaymentDeclined)
async def on_payment_declined(uow: UnitOfWork, event: Event[PaymentDeclined]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.PAYMENT_DECLINED, event.payload.reason)


@router.on(ShipmentFailed)
async def on_shipment_failed(uow: UnitOfWork, event: Event[ShipmentFailed]) -> None:
    await apply_fact(uow, event.payload.order_id, Fact.SHIPMENT_FAILED, event.payload.reason)


@router.on(ShipmentScheduled)
async def on_shipment_scheduled(uow: UnitOfWork, event: Event[ShipmentScheduled]) -> None:
    await apply_fact(
        uow, event.payload.order_id, Fact.SHIPMENT_SCHEDULED, shipment_id=event.payload.shipment_id
    )
