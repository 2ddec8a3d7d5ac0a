"""Payments' reactions to saga events: deposit, capture or decline, refund, tombstone.

Every handler runs in the consumer's unit of work; it locks the rows it changes (the
repository's) and leaves state alone when the transition was already made, so a redelivered
or repeated event charges, refunds and emits nothing twice. With a payment provider
(``services.payments.provider``) the local books still decide first (an order the balance
cannot cover is declined without a call); the provider then authorises and captures, and its
decline is the order's.
"""

from __future__ import annotations

import uuid

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.routing import Router, refusing
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
    decline,
    refund,
)
from services.payments.provider import Declined, Provider
from services.payments.repository import PaymentsRepository


def build_router(provider: Provider | None = None) -> Router:
    """The handlers; with ``provider`` a charge the books allow is also authorised and
    captured there (its decline wins), and refunds go through it."""
    router = Router()

    # A request from outside the saga: a refused one holds back nothing of its key.
    @router.on(FundsDeposited, sequenced=False)
    async def on_funds_deposited(uow: UnitOfWork, event: Event[FundsDeposited]) -> None:
        p = event.payload
        repo = PaymentsRepository(uow.session)
        if not await repo.record_deposit(p):
            return  # this deposit was credited already, under another event id
        stored = await repo.lock_account(p.customer_id)
        account = stored or Account(p.customer_id)
        with refusing(Refused):  # the transaction (and the deposit's row) rolls back
            account.deposit(p.amount_cents)
        await repo.save_account(account, utcnow(), new=stored is None)
        # The fact read models count (a refused or repeated request has none).
        uow.emit(FundsCredited(**p.model_dump(), credited_at=utcnow()), key=p.customer_id)

    @router.on(StockReserved)
    async def on_stock_reserved(uow: UnitOfWork, event: Event[StockReserved]) -> None:
        p = event.payload
        repo = PaymentsRepository(uow.session)
        stored = await repo.lock_account(p.customer_id)
        account = stored or Account(p.customer_id)  # an unknown customer has nothing to spend
        existing = await repo.payment(p.order_id)
        cancelled = await repo.tombstoned(p.order_id)
        payment = charge(account, p.order_id, str(uuid.uuid4()), p.total_cents, existing, cancelled)
        if payment is None:
            if provider is not None and cancelled and existing is None:
                await provider.settle_cancelled(repo, p.order_id, p.customer_id, p.total_cents)
            return  # cancelled before the charge, or charged already
        reason = INSUFFICIENT_FUNDS
        if payment.status is PaymentStatus.CAPTURED and provider is not None:
            verdict = await provider.charge(repo, p.order_id, p.customer_id, p.total_cents)
            if isinstance(verdict, Declined):
                payment, reason = decline(account, payment), verdict.reason
        now = utcnow()
        await repo.insert_payment(payment, now, reason)
        captured = payment.status is PaymentStatus.CAPTURED
        if captured and stored is not None:  # a zero total from an unknown customer moves nothing
            await repo.save_account(account, now)
        uow.emit(
            _captured(p, payment) if captured else _declined(p, account, reason), key=p.order_id
        )

    @router.on(ShipmentFailed)
    async def on_shipment_failed(uow: UnitOfWork, event: Event[ShipmentFailed]) -> None:
        p = event.payload
        repo = PaymentsRepository(uow.session)
        payment = await repo.payment(p.order_id, lock=True)
        if payment is not None:
            await _refund(uow, repo, provider, payment, p.reason, "shipping")

    @router.on(OrderCancelled)
    async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
        p = event.payload
        repo = PaymentsRepository(uow.session)
        # The account lock serialises this with a concurrent charge of the same order
        # (PostgreSQL; SQLite transactions are serial): the charge then sees the tombstone,
        # or we the payment.
        await repo.lock_account(p.customer_id)
        payment = await repo.payment(p.order_id, lock=True)
        if payment is not None:
            await _refund(uow, repo, provider, payment, p.reason, p.failed_step)
        elif not await repo.tombstoned(p.order_id):
            await repo.tombstone(p.order_id, p.reason, p.cancelled_at)

    return router


async def _refund(
    uow: UnitOfWork,
    repo: PaymentsRepository,
    provider: Provider | None,
    payment: Payment,
    reason: str,
    failed_step: str | None,
) -> None:
    """Refunds a capture (at the provider first, when there is one) and says so once; a
    declined or refunded payment is left alone."""
    account = await repo.lock_account(payment.customer_id) or Account(payment.customer_id)
    if not refund(account, payment):
        return
    if provider is not None:
        await provider.refund(repo, payment.order_id, payment.customer_id, payment.amount)
    now = utcnow()
    await repo.save_account(account, now)
    await repo.set_payment_status(payment, reason, now)
    refunded = PaymentRefunded(
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        payment_id=payment.payment_id,
        amount_cents=payment.amount,
        reason=reason,
        failed_step=failed_step,
        refunded_at=now,
    )
    uow.emit(refunded, key=payment.order_id)


# Without a provider: the books alone decide (the existing deployments, the bench's baseline).
router = build_router()


def _captured(reserved: StockReserved, payment: Payment) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=reserved.order_id,
        customer_id=reserved.customer_id,
        payment_id=payment.payment_id,
        amount_cents=payment.amount,
        shipping_address=reserved.shipping_address,
        captured_at=utcnow(),
    )


def _declined(reserved: StockReserved, account: Account, reason: str) -> PaymentDeclined:
    return PaymentDeclined(
        order_id=reserved.order_id,
        customer_id=reserved.customer_id,
        amount_cents=reserved.total_cents,
        reason=reason,
        balance_cents=account.balance,
        declined_at=utcnow(),
    )
