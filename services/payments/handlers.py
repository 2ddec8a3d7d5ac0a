"""Payments' reactions to saga events: deposit, capture or decline, refund, tombstone.

Every handler runs in the consumer's unit of work; it reads the rows it changes with
``FOR UPDATE`` (a no-op on SQLite, whose transactions already hold the write lock) and
leaves state alone when the transition was already made, so a redelivered or repeated
event charges, refunds and emits nothing twice.

Statements are built once, at import, with ``bindparam`` placeholders: building one per call
(construction, coercion, cache key) costs about as much CPU as executing it. An UPDATE's
WHERE placeholder is named ``b_<column>``: SQLAlchemy keeps the column names for its SET.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, insert, select, update

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.prepared import Prepared
from events.routing import Refusal, Router
from schemas.models import (
    FundsCredited,
    FundsDeposited,
    OrderCancelled,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentFailed,
    StockReserved,
)
from services.payments.domain import (
    INSUFFICIENT_FUNDS,
    Account,
    Payment,
    PaymentStatus,
    Refused,
    charge,
    refund,
)
from services.payments.tables import accounts, deposits, payments, tombstones

router = Router()


_DEPOSIT_SEEN = Prepared(
    select(deposits.c.deposit_id).where(deposits.c.deposit_id == bindparam("deposit_id"))
)
_INSERT_DEPOSIT = Prepared(insert(deposits))


# A request from outside the saga: a refused one holds back nothing of its key.
@router.on(FundsDeposited, sequenced=False)
async def on_funds_deposited(uow: UnitOfWork, event: Event[FundsDeposited]) -> None:
    p = event.payload
    if await _DEPOSIT_SEEN.first(uow.session, {"deposit_id": p.deposit_id}) is not None:
        return  # this deposit was credited already, under another event id
    await _INSERT_DEPOSIT.run(
        uow.session,
        {
            "deposit_id": p.deposit_id,
            "customer_id": p.customer_id,
            "amount_cents": p.amount_cents,
            "deposited_at": p.deposited_at,
        },
    )
    stored = await _lock_account(uow, p.customer_id)
    account = stored or Account(p.customer_id)
    try:
        account.deposit(p.amount_cents)
    except Refused as exc:
        raise Refusal(str(exc)) from exc  # the transaction (and deposit row) rolls back
    await _save_account(uow, account, new=stored is None)
    # The fact read models count (a refused or repeated request has none), in the same unit
    # of work as the credit.
    credited = FundsCredited(
        deposit_id=p.deposit_id,
        customer_id=p.customer_id,
        amount_cents=p.amount_cents,
        deposited_at=p.deposited_at,
        credited_at=utcnow(),
    )
    uow.emit(credited, key=p.customer_id)


@router.on(StockReserved)
async def on_stock_reserved(uow: UnitOfWork, event: Event[StockReserved]) -> None:
    p = event.payload
    stored = await _lock_account(uow, p.customer_id)
    account = stored or Account(p.customer_id)  # an unknown customer has nothing to spend
    existing = await _payment(uow, p.order_id)
    cancelled = await _tombstoned(uow, p.order_id)
    payment = charge(account, p.order_id, str(uuid.uuid4()), p.total_cents, existing, cancelled)
    if payment is None:
        return  # cancelled before the charge, or charged already
    await _insert_payment(uow, payment)
    captured = payment.status is PaymentStatus.CAPTURED
    if captured and stored is not None:  # a zero total from an unknown customer moves nothing
        await _save_account(uow, account)
    uow.emit(_captured(p, payment) if captured else _declined(p, account), key=p.order_id)


@router.on(ShipmentFailed)
async def on_shipment_failed(uow: UnitOfWork, event: Event[ShipmentFailed]) -> None:
    p = event.payload
    payment = await _payment(uow, p.order_id, lock=True)
    if payment is not None:
        await _refund(uow, payment, p.reason, "shipping")


_INSERT_TOMBSTONE = Prepared(insert(tombstones))


@router.on(OrderCancelled)
async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
    p = event.payload
    # The account lock serialises this with a concurrent charge of the same order (PostgreSQL;
    # SQLite transactions are serial): the charge then sees the tombstone, or we the payment.
    await _lock_account(uow, p.customer_id)
    payment = await _payment(uow, p.order_id, lock=True)
    if payment is not None:
        await _refund(uow, payment, p.reason, p.failed_step)
    elif not await _tombstoned(uow, p.order_id):
        tombstone = {"order_id": p.order_id, "reason": p.reason, "cancelled_at": p.cancelled_at}
        await _INSERT_TOMBSTONE.run(uow.session, tombstone)


# --- the steps the handlers share ----------------------------------------------------------


async def _refund(uow: UnitOfWork, payment: Payment, reason: str, failed_step: str | None) -> None:
    """Refunds a capture and says so once; a declined or refunded payment is left alone."""
    account = await _lock_account(uow, payment.customer_id) or Account(payment.customer_id)
    if not refund(account, payment):
        return
    await _save_account(uow, account)
    await _set_status(uow, payment, reason)
    refunded = PaymentRefunded(
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        payment_id=payment.payment_id,
        amount_cents=payment.amount,
        reason=reason,
        failed_step=failed_step,
        refunded_at=utcnow(),
    )
    uow.emit(refunded, key=payment.order_id)


_LOCK_ACCOUNT = Prepared(
    select(accounts).where(accounts.c.customer_id == bindparam("customer_id")).with_for_update()
)


async def _lock_account(uow: UnitOfWork, customer_id: str) -> Account | None:
    params = {"customer_id": customer_id}
    row = await _LOCK_ACCOUNT.first(uow.session, params)
    if row is None:
        return None
    return Account(
        customer_id,
        balance=row["balance_cents"],
        deposited=row["deposited_cents"],
        captured=row["captured_cents"],
        refunded=row["refunded_cents"],
    )


_INSERT_ACCOUNT = Prepared(insert(accounts))
_UPDATE_ACCOUNT = Prepared(
    update(accounts)
    .where(accounts.c.customer_id == bindparam("b_customer_id"))
    .values(
        balance_cents=bindparam("balance_cents"),
        deposited_cents=bindparam("deposited_cents"),
        captured_cents=bindparam("captured_cents"),
        refunded_cents=bindparam("refunded_cents"),
        updated_at=bindparam("updated_at"),
    )
)


async def _save_account(uow: UnitOfWork, account: Account, *, new: bool = False) -> None:
    now = utcnow()
    values = {
        "balance_cents": account.balance,
        "deposited_cents": account.deposited,
        "captured_cents": account.captured,
        "refunded_cents": account.refunded,
        "updated_at": now,
    }
    if new:
        values |= {"customer_id": account.customer_id, "created_at": now}
        await _INSERT_ACCOUNT.run(uow.session, values)
    else:
        await _UPDATE_ACCOUNT.run(uow.session, {"b_customer_id": account.customer_id, **values})


_BY_ORDER = select(payments).where(payments.c.order_id == bindparam("order_id"))
_PAYMENT = Prepared(_BY_ORDER)
_PAYMENT_FOR_UPDATE = Prepared(_BY_ORDER.with_for_update())


async def _payment(uow: UnitOfWork, order_id: str, *, lock: bool = False) -> Payment | None:
    query = _PAYMENT_FOR_UPDATE if lock else _PAYMENT
    found = await query.first(uow.session, {"order_id": order_id})
    if found is None:
        return None
    return Payment(
        order_id,
        found["payment_id"],
        found["customer_id"],
        found["amount_cents"],
        PaymentStatus(found["status"]),
    )


_TOMBSTONED = Prepared(
    select(tombstones.c.order_id).where(tombstones.c.order_id == bindparam("order_id"))
)


async def _tombstoned(uow: UnitOfWork, order_id: str) -> bool:
    return await _TOMBSTONED.first(uow.session, {"order_id": order_id}) is not None


_INSERT_PAYMENT = Prepared(insert(payments))


async def _insert_payment(uow: UnitOfWork, payment: Payment) -> None:
    now = utcnow()
    declined = payment.status is PaymentStatus.DECLINED
    await _INSERT_PAYMENT.run(
        uow.session,
        {
            "order_id": payment.order_id,
            "payment_id": payment.payment_id,
            "customer_id": payment.customer_id,
            "amount_cents": payment.amount,
            "status": payment.status.value,
            "reason": INSUFFICIENT_FUNDS if declined else None,
            "created_at": now,
            "updated_at": now,
        },
    )


_SET_PAYMENT_STATUS = Prepared(
    update(payments)
    .where(payments.c.order_id == bindparam("b_order_id"))
    .values(
        status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("updated_at")
    )
)


async def _set_status(uow: UnitOfWork, payment: Payment, reason: str | None) -> None:
    params = {
        "b_order_id": payment.order_id,
        "status": payment.status.value,
        "reason": reason,
        "updated_at": utcnow(),
    }
    await _SET_PAYMENT_STATUS.run(uow.session, params)


def _captured(reserved: StockReserved, payment: Payment) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=reserved.order_id,
        customer_id=reserved.customer_id,
        payment_id=payment.payment_id,
        amount_cents=payment.amount,
        shipping_address=reserved.shipping_address,
        captured_at=utcnow(),
    )


def _declined(reserved: StockReserved, account: Account) -> PaymentDeclined:
    return PaymentDeclined(
        order_id=reserved.order_id,
        customer_id=reserved.customer_id,
        amount_cents=reserved.total_cents,
        reason=INSUFFICIENT_FUNDS,
        balance_cents=account.balance,
        declined_at=utcnow(),
    )
