"""Inventory's reactions to saga events: restock (and price), reserve, release and ship.

Every handler runs in the consumer's unit of work; it locks the rows it changes (the
repository's) and leaves state alone when the transition was already made, so a redelivered
or repeated event emits nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from events.avro.bounds import INT_MAX
from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.routing import Router, refusing
from schemas.models import (
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    PaymentDeclined,
    PaymentRefunded,
    SkuPriced,
    StockLine,
    StockReceived,
    StockRejected,
    StockReleased,
    StockReserved,
    StockRestocked,
)
from schemas.models import Shortage as ShortageModel
from services.inventory.domain import (
    Line,
    Refused,
    Reservation,
    ReservationStatus,
    Shortages,
    StockLevel,
    new_price,
    release,
    reserve,
    ship,
)
from services.inventory.repository import InventoryRepository

router = Router()

# The events that change a reservation's stock, found by its order id.
_SETTLING = (PaymentDeclined, PaymentRefunded, OrderCancelled, OrderCompleted)


@router.locks_ahead
async def lock_stock_ahead(uow: UnitOfWork, events: Sequence[Event[Any]]) -> None:
    """Locks, in one sorted statement, the stock rows every event of a batch will change.
    Event by event, a batch reserving SKU A then B and another reserving B then A (two
    instances sharing the database) would wait on each other; the database would break the
    deadlock by failing one, and its batch would go again event by event. One event alone
    locks its rows in one sorted statement anyway."""
    if len(events) < 2:
        return
    skus: set[str] = set()
    settled: list[str] = []
    for event in events:
        p = event.payload
        if isinstance(p, OrderCreated):
            skus.update(line.sku for line in p.lines)
        elif isinstance(p, StockRestocked):
            skus.add(p.sku)
        elif isinstance(p, _SETTLING):
            settled.append(p.order_id)
    repo = InventoryRepository(uow.session)
    if settled:
        skus |= await repo.reserved_skus(settled)
    if skus:
        await repo.lock_stock_ahead(skus)


# A request from outside the saga: a refused one holds back nothing of its key.
@router.on(StockRestocked, sequenced=False)
async def on_stock_restocked(uow: UnitOfWork, event: Event[StockRestocked]) -> None:
    p = event.payload
    repo = InventoryRepository(uow.session)
    if not await repo.record_restock(p):
        return  # this restock was counted already, under another event id
    levels = await repo.lock_stock([p.sku])
    level = levels.get(p.sku) or StockLevel(p.sku)
    with refusing(Refused):  # the transaction (and the restock's row) rolls back
        level.restock(p.quantity)
    now = utcnow()
    await repo.save_stock([level], now, new=p.sku not in levels)
    # The fact read models count (a refused or repeated request has none).
    received = p.model_dump(exclude={"unit_price_cents"})
    uow.emit(StockReceived(**received, received_at=now), key=p.sku)
    await _set_price(repo, uow, p, now)


async def _set_price(
    repo: InventoryRepository, uow: UnitOfWork, p: StockRestocked, now: datetime
) -> None:
    """Stores the restock's price and publishes it (SkuPriced: orders prices orders from it)
    when it changes the SKU's price."""
    current = await repo.price(p.sku, lock=True)
    cents = new_price(current, p.unit_price_cents)
    if cents is None:
        return
    await repo.set_price(p.sku, cents, p.restock_id, now, new=current is None)
    priced = SkuPriced(sku=p.sku, unit_price_cents=cents, restock_id=p.restock_id, priced_at=now)
    uow.emit(priced, key=p.sku)


@router.on(OrderCreated)
async def on_order_created(uow: UnitOfWork, event: Event[OrderCreated]) -> None:
    p, now = event.payload, utcnow()
    repo = InventoryRepository(uow.session)
    if await repo.reservation(p.order_id) is not None:
        return  # this order was decided already
    levels = await repo.lock_stock([line.sku for line in p.lines])
    outcome = reserve(levels, [Line(line.sku, line.quantity) for line in p.lines])
    if isinstance(outcome, Shortages):
        rejected = Reservation(outcome.lines, ReservationStatus.REJECTED)
        await repo.insert_reservation(p.order_id, p.customer_id, rejected, outcome.reason, now)
        uow.emit(_rejected(p, outcome), key=p.order_id)
        return
    await repo.save_stock(levels.values(), now)
    await repo.insert_reservation(p.order_id, p.customer_id, outcome, None, now)
    uow.emit(_reserved(p, outcome), key=p.order_id)


@router.on(PaymentDeclined)
async def on_payment_declined(uow: UnitOfWork, event: Event[PaymentDeclined]) -> None:
    await _release(uow, event.payload.order_id, event.payload.reason, "payments")


@router.on(PaymentRefunded)
async def on_payment_refunded(uow: UnitOfWork, event: Event[PaymentRefunded]) -> None:
    p = event.payload
    await _release(uow, p.order_id, p.reason, p.failed_step)


@router.on(OrderCancelled)
async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
    p = event.payload
    await _release(uow, p.order_id, p.reason, p.failed_step)


@router.on(OrderCompleted)
async def on_order_completed(uow: UnitOfWork, event: Event[OrderCompleted]) -> None:
    order_id, now = event.payload.order_id, utcnow()
    repo = InventoryRepository(uow.session)
    found = await repo.reservation(order_id, lock=True)
    if found is None:
        return  # nothing was held for this order
    _, reservation = found
    levels = await repo.lock_stock(reservation.skus)
    if ship(reservation, levels):
        await repo.save_stock(levels.values(), now)
        await repo.set_reservation_status(order_id, reservation, None, now)


async def _release(uow: UnitOfWork, order_id: str, reason: str, failed_step: str | None) -> None:
    """Releases a held reservation and says so once; anything else is a no-op."""
    repo, now = InventoryRepository(uow.session), utcnow()
    found = await repo.reservation(order_id, lock=True)
    if found is None:
        return
    customer_id, reservation = found
    levels = await repo.lock_stock(reservation.skus)
    if not release(reservation, levels):
        return
    await repo.save_stock(levels.values(), now)
    await repo.set_reservation_status(order_id, reservation, reason, now)
    released = StockReleased(
        order_id=order_id,
        customer_id=customer_id,
        lines=_stock_lines(reservation.lines),
        reason=reason,
        failed_step=failed_step,
        released_at=now,
    )
    uow.emit(released, key=order_id)


def _stock_lines(lines: Iterable[Line]) -> list[StockLine]:
    return [StockLine(sku=line.sku, quantity=line.quantity) for line in lines]


def _reserved(order: OrderCreated, reservation: Reservation) -> StockReserved:
    return StockReserved(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=_stock_lines(reservation.lines),
        total_cents=order.total_cents,
        shipping_address=order.shipping_address,
        reserved_at=utcnow(),
    )


def _rejected(order: OrderCreated, outcome: Shortages) -> StockRejected:
    return StockRejected(
        order_id=order.order_id,
        customer_id=order.customer_id,
        reason=outcome.reason,
        shortages=[
            ShortageModel(
                sku=s.sku, requested=_avro_int(s.requested), available=_avro_int(s.available)
            )
            for s in outcome.shortages
        ],
        rejected_at=utcnow(),
    )


def _avro_int(count: int) -> int:
    # The contract's counts are 32-bit; a per-SKU sum or a stock level can be larger, and
    # "more than 2^31-1" is all a shortage report needs to say.
    return min(count, INT_MAX)
