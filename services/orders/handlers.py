"""Orders handlers: keep the platform's prices, place orders priced from them, follow their
progress, and turn other services' facts into terminal states. The decisions are the domain's
(``services.orders.domain``), the statements the repository's; ``place_order`` and
``apply_fact`` also serve the API and the watchdog."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from events.envelope import Event, utcnow
from events.models import EventModel
from events.outbox import UnitOfWork
from events.prepared import Row
from events.routing import PermanentError, Router, refusing
from schemas.models import (
    Address,
    OrderCancellationRequested,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentCaptured,
    PaymentDeclined,
    ShipmentFailed,
    ShipmentScheduled,
    SkuPriced,
    StockRejected,
    StockReserved,
)
from services.orders.domain import (
    Fact,
    PricingRefused,
    Progress,
    Requested,
    Status,
    Step,
    Transition,
    advance,
    deadline,
    decide,
    order_total,
    price_lines,
    waiting_when_created,
)
from services.orders.repository import OrdersRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NewOrder:
    """An order to open as the customer asked for it (a line may leave its price out)."""

    order_id: str
    customer_id: str
    lines: Sequence[Requested]
    shipping_address: Address

    @classmethod
    def placed(cls, p: OrderPlaced) -> NewOrder:
        lines = [Requested(ln.sku, ln.quantity, ln.unit_price_cents) for ln in p.lines]
        return cls(p.order_id, p.customer_id, lines, p.shipping_address)


async def place_order(uow: UnitOfWork, order: NewOrder, saga_deadline: timedelta) -> bool:
    """Prices the order from the platform's prices, creates it and emits OrderCreated; False
    if the order id already exists. Raises ``PricingRefused`` (nothing written) when a line
    cannot be priced.

    The order's saga must end within ``saga_deadline`` (the watchdog reports it otherwise).
    """
    repo = OrdersRepository(uow.session)
    if await repo.exists(order.order_id):
        return False
    prices = price_lines(order.lines, await repo.prices(ln.sku for ln in order.lines))
    lines = [
        OrderLine(sku=ln.sku, quantity=ln.quantity, unit_price_cents=price)
        for ln, price in zip(order.lines, prices, strict=True)
    ]
    total = order_total((ln.quantity, ln.unit_price_cents) for ln in lines)
    now = utcnow()
    created = OrderCreated(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=lines,
        total_cents=total,
        shipping_address=order.shipping_address,
        created_at=now,
    )
    # Events orders emits later on its own (the watchdog's) join the saga's trace.
    envelope = uow.emit(created, key=order.order_id)
    waiting = waiting_when_created(now)
    await repo.insert(
        {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "status": Status.PENDING,
            "total_cents": total,
            "lines": json.dumps([line.model_dump() for line in lines]),
            "shipping_address": order.shipping_address.model_dump_json(),
            "created_at": now,
            "updated_at": now,
            "deadline_at": deadline(now, saga_deadline),
            "waiting_on": waiting.step.value,
            "waiting_since": waiting.since,
            "correlation_id": envelope.correlation_id,
            "traceparent": envelope.traceparent,
        }
    )
    return True


async def _locked(repo: OrdersRepository, order_id: str) -> Row:
    row = await repo.get(order_id, lock=True)
    if row is None:
        raise PermanentError(f"unknown order {order_id}")
    return row


async def apply_progress(uow: UnitOfWork, order_id: str, progress: Progress, at: datetime) -> None:
    """Records the step a pending order waits on now (a fact that does not end it)."""
    repo = OrdersRepository(uow.session)
    row = await _locked(repo, order_id)
    current = Step(row["waiting_on"]) if row["waiting_on"] else None
    waiting = advance(Status(row["status"]), current, progress, at)
    if waiting is not None:  # None: ended already, or past that step (facts come in any order)
        await repo.set_waiting(order_id, waiting, utcnow())


async def apply_fact(
    uow: UnitOfWork,
    order_id: str,
    fact: Fact,
    reason: str | None = None,
    shipment_id: str | None = None,
    failed_step: str | None = None,
) -> None:
    """Ends a pending order as ``fact`` decides and emits how it ended; a fact after the end
    is kept on the order for audit."""
    repo = OrdersRepository(uow.session)
    row = await _locked(repo, order_id)
    transition = decide(Status(row["status"]), fact, reason, failed_step)
    if transition is None:
        log.info(
            "fact after the order ended", order_id=order_id, fact=fact.value, status=row["status"]
        )
        late = json.dumps([*json.loads(row["late_facts"]), fact.value])
        await repo.set_late_facts(order_id, late)
        return
    now = utcnow()
    shipment_id = shipment_id or row["shipment_id"]
    await repo.end(order_id, transition, shipment_id, now)
    uow.emit(_ended(row, transition, shipment_id, now), key=order_id)
    log.info(
        "order ended",
        order_id=order_id,
        status=str(transition.status),
        failed_step=transition.failed_step,
        reason=transition.reason,
    )


def _ended(row: Row, transition: Transition, shipment_id: str | None, now: datetime) -> EventModel:
    """The terminal event that says how the order ended."""
    if transition.status is Status.COMPLETED:
        if shipment_id is None:  # completed by ShipmentScheduled, which names one
            raise PermanentError(f"order {row['order_id']} completed without a shipment")
        return OrderCompleted(
            order_id=row["order_id"],
            customer_id=row["customer_id"],
            total_cents=row["total_cents"],
            shipment_id=shipment_id,
            completed_at=now,
        )
    common: dict[str, Any] = {
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "reason": transition.reason or "",
        "failed_step": transition.failed_step,
    }
    if transition.status is Status.REJECTED:
        return OrderRejected(**common, rejected_at=now)
    return OrderCancelled(**common, cancelled_at=now)


def build_router(saga_deadline: timedelta) -> Router:
    """The handlers, with orders placed by event given ``saga_deadline`` to end."""
    router = Router()

    @router.on(OrderPlaced)
    async def on_order_placed(uow: UnitOfWork, event: Event[OrderPlaced]) -> None:
        # An order the platform cannot price is dead-lettered with the reason (re-drive it
        # once inventory prices the SKU); its key's later events do not wait on it.
        with refusing(PricingRefused):
            await place_order(uow, NewOrder.placed(event.payload), saga_deadline)

    @router.on(SkuPriced)
    async def on_sku_priced(uow: UnitOfWork, event: Event[SkuPriced]) -> None:
        # Keyed by SKU: a SKU's prices arrive in the order inventory set them; the last wins.
        p = event.payload
        await OrdersRepository(uow.session).set_price(p.sku, p.unit_price_cents, p.priced_at)

    @router.on(OrderCancellationRequested)
    async def on_cancel_requested(
        uow: UnitOfWork, event: Event[OrderCancellationRequested]
    ) -> None:
        reason = event.payload.reason or "cancelled by the customer"
        await apply_fact(uow, event.payload.order_id, Fact.CANCEL_REQUESTED, reason)

    @router.on(StockReserved)
    async def on_stock_reserved(uow: UnitOfWork, event: Event[StockReserved]) -> None:
        p = event.payload
        await apply_progress(uow, p.order_id, Progress.STOCK_RESERVED, p.reserved_at)

    @router.on(PaymentCaptured)
    async def on_payment_captured(uow: UnitOfWork, event: Event[PaymentCaptured]) -> None:
        p = event.payload
        await apply_progress(uow, p.order_id, Progress.PAYMENT_CAPTURED, p.captured_at)

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
        p = event.payload
        await apply_fact(uow, p.order_id, Fact.SHIPMENT_SCHEDULED, shipment_id=p.shipment_id)

    return router
