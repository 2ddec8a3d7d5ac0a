"""Inventory's reactions to saga events: restock, reserve, release and ship.

Every handler runs in the consumer's unit of work; it reads the rows it changes with
``FOR UPDATE`` (a no-op on SQLite, whose transactions already hold the write lock) and
leaves state alone when the transition was already made, so a redelivered or repeated
event emits nothing twice.

Statements are built once, at import, with ``bindparam`` placeholders: building one per call
(construction, coercion, cache key) costs about as much CPU as executing it. An UPDATE's
WHERE placeholder is named ``b_<column>``: SQLAlchemy keeps the column names for its SET.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import bindparam, insert, select, update

from events.avro.bounds import INT_MAX
from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.prepared import Prepared
from events.routing import Refusal, Router
from schemas.models import (
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    PaymentDeclined,
    PaymentRefunded,
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
    release,
    reserve,
    ship,
)
from services.inventory.tables import reservations, restocks, stock

router = Router()


_RESTOCK_SEEN = Prepared(
    select(restocks.c.restock_id).where(restocks.c.restock_id == bindparam("restock_id"))
)
_INSERT_RESTOCK = Prepared(insert(restocks))


# A request from outside the saga: a refused one holds back nothing of its key.
@router.on(StockRestocked, sequenced=False)
async def on_stock_restocked(uow: UnitOfWork, event: Event[StockRestocked]) -> None:
    p = event.payload
    if await _RESTOCK_SEEN.first(uow.session, {"restock_id": p.restock_id}) is not None:
        return  # this restock was counted already, under another event id
    await _INSERT_RESTOCK.run(
        uow.session,
        {
            "restock_id": p.restock_id,
            "sku": p.sku,
            "quantity": p.quantity,
            "restocked_at": p.restocked_at,
        },
    )
    levels = await _lock_stock(uow, [p.sku])
    level = levels.get(p.sku) or StockLevel(p.sku)
    try:
        level.restock(p.quantity)
    except Refused as exc:
        raise Refusal(str(exc)) from exc  # the transaction (and restock row) rolls back
    await _save_stock(uow, [level], new=p.sku not in levels)
    # The fact read models count (a refused or repeated request has none), in the same unit
    # of work as the count.
    received = StockReceived(
        restock_id=p.restock_id,
        sku=p.sku,
        quantity=p.quantity,
        restocked_at=p.restocked_at,
        received_at=utcnow(),
    )
    uow.emit(received, key=p.sku)


@router.on(OrderCreated)
async def on_order_created(uow: UnitOfWork, event: Event[OrderCreated]) -> None:
    p = event.payload
    if await _reservation(uow, p.order_id) is not None:
        return  # this order was decided already
    levels = await _lock_stock(uow, [line.sku for line in p.lines])
    outcome = reserve(levels, [Line(line.sku, line.quantity) for line in p.lines])
    if isinstance(outcome, Shortages):
        rejected = Reservation(outcome.lines, ReservationStatus.REJECTED)
        await _insert_reservation(uow, p, rejected, outcome.reason)
        uow.emit(_rejected(p, outcome), key=p.order_id)
        return
    await _save_stock(uow, levels.values())
    await _insert_reservation(uow, p, outcome, None)
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
    found = await _reservation(uow, event.payload.order_id, lock=True)
    if found is None:
        return  # nothing was held for this order
    _, reservation = found
    levels = await _lock_stock(uow, reservation.skus)
    if ship(reservation, levels):
        await _save_stock(uow, levels.values())
        await _set_status(uow, event.payload.order_id, reservation, None)


# --- the steps the handlers share ----------------------------------------------------------


async def _release(uow: UnitOfWork, order_id: str, reason: str, failed_step: str | None) -> None:
    """Releases a held reservation and says so once; anything else is a no-op."""
    found = await _reservation(uow, order_id, lock=True)
    if found is None:
        return
    customer_id, reservation = found
    levels = await _lock_stock(uow, reservation.skus)
    if not release(reservation, levels):
        return
    await _save_stock(uow, levels.values())
    await _set_status(uow, order_id, reservation, reason)
    released = StockReleased(
        order_id=order_id,
        customer_id=customer_id,
        lines=_stock_lines(reservation.lines),
        reason=reason,
        failed_step=failed_step,
        released_at=utcnow(),
    )
    uow.emit(released, key=order_id)


_LOCK_STOCK = Prepared(
    select(stock)
    .where(stock.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(stock.c.sku)
    .with_for_update()
)


async def _lock_stock(uow: UnitOfWork, skus: Iterable[str]) -> dict[str, StockLevel]:
    # Sorted, so that two transactions lock shared SKUs in the same order (no deadlock).
    params = {"skus": sorted(set(skus))}
    rows = await _LOCK_STOCK.rows(uow.session, params)
    return {
        r["sku"]: StockLevel(r["sku"], r["on_hand"], r["reserved"], r["shipped"], r["received"])
        for r in rows
    }


_INSERT_STOCK = Prepared(insert(stock))
_UPDATE_STOCK = Prepared(
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(
        on_hand=bindparam("on_hand"),
        reserved=bindparam("reserved"),
        shipped=bindparam("shipped"),
        received=bindparam("received"),
        updated_at=bindparam("updated_at"),
    )
)


async def _save_stock(uow: UnitOfWork, levels: Iterable[StockLevel], *, new: bool = False) -> None:
    for level in levels:
        values = {
            "on_hand": level.on_hand,
            "reserved": level.reserved,
            "shipped": level.shipped,
            "received": level.received,
            "updated_at": utcnow(),
        }
        if new:
            await _INSERT_STOCK.run(uow.session, {"sku": level.sku, **values})
        else:
            await _UPDATE_STOCK.run(uow.session, {"b_sku": level.sku, **values})


_BY_ORDER = select(reservations).where(reservations.c.order_id == bindparam("order_id"))
_RESERVATION = Prepared(_BY_ORDER)
_RESERVATION_FOR_UPDATE = Prepared(_BY_ORDER.with_for_update())


async def _reservation(
    uow: UnitOfWork, order_id: str, *, lock: bool = False
) -> tuple[str, Reservation] | None:
    """The order's customer and reservation, if inventory has seen the order."""
    query = _RESERVATION_FOR_UPDATE if lock else _RESERVATION
    found = await query.first(uow.session, {"order_id": order_id})
    if found is None:
        return None
    lines = tuple(Line(line["sku"], line["quantity"]) for line in json.loads(found["lines"]))
    return found["customer_id"], Reservation(lines, ReservationStatus(found["status"]))


_INSERT_RESERVATION = Prepared(insert(reservations))


async def _insert_reservation(
    uow: UnitOfWork, order: OrderCreated, reservation: Reservation, reason: str | None
) -> None:
    now = utcnow()
    lines = json.dumps([{"sku": x.sku, "quantity": x.quantity} for x in reservation.lines])
    await _INSERT_RESERVATION.run(
        uow.session,
        {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "status": reservation.status.value,
            "lines": lines,
            "reason": reason,
            "created_at": now,
            "updated_at": now,
        },
    )


_SET_RESERVATION_STATUS = Prepared(
    update(reservations)
    .where(reservations.c.order_id == bindparam("b_order_id"))
    .values(
        status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("updated_at")
    )
)


async def _set_status(
    uow: UnitOfWork, order_id: str, reservation: Reservation, reason: str | None
) -> None:
    params = {
        "b_order_id": order_id,
        "status": reservation.status.value,
        "reason": reason,
        "updated_at": utcnow(),
    }
    await _SET_RESERVATION_STATUS.run(uow.session, params)


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
