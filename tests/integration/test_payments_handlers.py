"""Payments' handlers against a real SQLite database and the real outbox and codec."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from events.envelope import utcnow
from events.routing import PermanentError
from events.service import ServiceContext
from schemas.models import (
    Address,
    FundsCredited,
    FundsDeposited,
    OrderCancelled,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentFailed,
    StockLine,
    StockReserved,
)
from services.payments.app import SERVICE, Settings
from services.payments.tables import accounts, payments, tombstones
from tests.integration.service_kit import deliver, http_client, service_fixture
from tests.integration.service_kit import emitted as outbox_events

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="Paris", postal_code="75001", country="FR")
ctx = service_fixture(SERVICE, Settings)


async def account(ctx: ServiceContext, customer_id: str) -> tuple[int, int, int, int] | None:
    """(balance, deposited, captured, refunded); checks the books balance."""
    query = select(accounts).where(accounts.c.customer_id == customer_id)
    async with ctx.db.session() as s:
        r = (await s.execute(query)).mappings().first()
    if r is None:
        return None
    books = (r["balance_cents"], r["deposited_cents"], r["captured_cents"], r["refunded_cents"])
    balance, deposited, captured, refunded = books
    assert balance + captured - refunded == deposited
    return books


async def payment(ctx: ServiceContext, order_id: str) -> dict[str, Any] | None:
    query = select(payments).where(payments.c.order_id == order_id)
    async with ctx.db.session() as s:
        row = (await s.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def tombstoned(ctx: ServiceContext, order_id: str) -> bool:
    query = select(tombstones).where(tombstones.c.order_id == order_id)
    async with ctx.db.session() as s:
        return (await s.execute(query)).first() is not None


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:8]}"


def deposit(customer_id: str, amount: int, deposit_id: str | None = None) -> FundsDeposited:
    return FundsDeposited(
        deposit_id=deposit_id or str(uuid.uuid4()),
        customer_id=customer_id,
        amount_cents=amount,
        deposited_at=utcnow(),
    )


def reserved(customer_id: str, total: int, order_id: str | None = None) -> StockReserved:
    return StockReserved(
        order_id=order_id or str(uuid.uuid4()),
        customer_id=customer_id,
        lines=[StockLine(sku="SKU-1", quantity=1)],
        total_cents=total,
        shipping_address=ADDRESS,
        reserved_at=utcnow(),
    )


def cancelled(r: StockReserved, failed_step: str | None = None) -> OrderCancelled:
    return OrderCancelled(
        order_id=r.order_id,
        customer_id=r.customer_id,
        reason="changed my mind",
        failed_step=failed_step,
        cancelled_at=utcnow(),
    )


def shipment_failed(r: StockReserved) -> ShipmentFailed:
    return ShipmentFailed(
        order_id=r.order_id,
        customer_id=r.customer_id,
        reason="address not serviceable: country XX",
        failed_at=utcnow(),
    )


async def emitted(ctx: ServiceContext) -> list[tuple[str, Any]]:
    """The saga's events payments emitted (the facts of credited deposits left out)."""
    return [(k, e) for k, e in await outbox_events(ctx) if not isinstance(e, FundsCredited)]


async def credited(ctx: ServiceContext) -> list[tuple[str, str, int]]:
    """(key, deposit id, amount) of each FundsCredited fact, in write order."""
    return [
        (k, e.deposit_id, e.amount_cents)
        for k, e in await outbox_events(ctx)
        if isinstance(e, FundsCredited)
    ]


async def test_deposits_open_an_account_and_the_same_deposit_counts_once(ctx):
    c = customer()
    assert await account(ctx, c) is None
    first = deposit(c, 500)
    await deliver(ctx, first)
    second = deposit(c, 250)
    await deliver(ctx, second)
    await deliver(ctx, first)  # redelivered with its event id lost
    await deliver(ctx, deposit(c, 500, deposit_id=first.deposit_id))  # re-sent as a new event
    assert await account(ctx, c) == (750, 750, 0, 0)
    assert await emitted(ctx) == []
    # One fact per credited deposit, keyed by the customer: the re-sent one has none.
    assert await credited(ctx) == [(c, first.deposit_id, 500), (c, second.deposit_id, 250)]


async def test_a_deposit_past_the_64_bit_range_is_refused_and_credits_nothing(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 1))
    # Deposits are bounded each: reaching 2^63 would take millions, so start near it.
    async with ctx.db.session() as s, s.begin():
        await s.execute(
            accounts.update()
            .where(accounts.c.customer_id == c)
            .values(balance_cents=2**63 - 2, deposited_cents=2**63 - 2)
        )
    with pytest.raises(PermanentError, match="would pass"):
        await deliver(ctx, deposit(c, 2))
    assert await account(ctx, c) == (2**63 - 2, 2**63 - 2, 0, 0)
    assert [amount for _, _, amount in await credited(ctx)] == [1]


async def test_a_balance_that_exactly_covers_the_total_is_captured(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 1000))
    r = reserved(c, 1000)
    await deliver(ctx, r)
    assert await account(ctx, c) == (0, 1000, 1000, 0)
    row = await payment(ctx, r.order_id)
    assert row is not None and row["status"] == "CAPTURED" and row["amount_cents"] == 1000
    [(key, event)] = await emitted(ctx)
    assert key == r.order_id
    assert event == PaymentCaptured(
        order_id=r.order_id,
        customer_id=c,
        payment_id=row["payment_id"],
        amount_cents=1000,
        shipping_address=ADDRESS,
        captured_at=event.captured_at,  # type: ignore[attr-defined]
    )


async def test_one_cent_short_is_declined_with_the_balance(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 999))
    r = reserved(c, 1000)
    await deliver(ctx, r)
    assert await account(ctx, c) == (999, 999, 0, 0)
    row = await payment(ctx, r.order_id)
    assert row is not None and row["status"] == "DECLINED"
    [(key, event)] = await emitted(ctx)
    assert key == r.order_id
    assert event == PaymentDeclined(
        order_id=r.order_id,
        customer_id=c,
        amount_cents=1000,
        reason="insufficient funds",
        balance_cents=999,
        declined_at=event.declined_at,  # type: ignore[attr-defined]
    )


async def test_an_unknown_customer_is_declined_and_gets_no_account(ctx):
    c = customer()
    r = reserved(c, 1)
    await deliver(ctx, r)
    [(_, event)] = await emitted(ctx)
    assert isinstance(event, PaymentDeclined) and event.balance_cents == 0
    assert await account(ctx, c) is None


async def test_an_order_is_never_charged_twice(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 5000))
    r = reserved(c, 1000)
    event_id = str(uuid.uuid4())
    await deliver(ctx, r, event_id=event_id)
    await deliver(ctx, r, event_id=event_id)
    await deliver(ctx, r)
    assert await account(ctx, c) == (4000, 5000, 1000, 0)
    assert [type(e) for _, e in await emitted(ctx)] == [PaymentCaptured]


async def test_a_declined_order_is_not_captured_after_a_later_deposit(ctx):
    c = customer()
    r = reserved(c, 1000)
    await deliver(ctx, r)
    await deliver(ctx, deposit(c, 5000))
    await deliver(ctx, r)  # the same reservation again: the decision stands
    assert await account(ctx, c) == (5000, 5000, 0, 0)
    assert [type(e) for _, e in await emitted(ctx)] == [PaymentDeclined]


@pytest.mark.parametrize(
    ("compensation", "reason", "failed_step"),
    [
        (shipment_failed, "address not serviceable: country XX", "shipping"),
        (lambda r: cancelled(r, "shipping"), "changed my mind", "shipping"),
        (lambda r: cancelled(r), "changed my mind", None),
    ],
    ids=["shipment-failed", "order-cancelled", "cancel-requested"],
)
async def test_a_capture_is_refunded_once(ctx, compensation, reason, failed_step):
    c = customer()
    await deliver(ctx, deposit(c, 3000))
    r = reserved(c, 1200)
    await deliver(ctx, r)
    await deliver(ctx, compensation(r))
    for late in (compensation(r), shipment_failed(r), cancelled(r, "shipping")):
        await deliver(ctx, late)
    assert await account(ctx, c) == (3000, 3000, 1200, 1200)
    row = await payment(ctx, r.order_id)
    assert row is not None and row["status"] == "REFUNDED" and row["reason"] == reason
    assert not await tombstoned(ctx, r.order_id)
    events = await emitted(ctx)
    assert [type(e) for _, e in events] == [PaymentCaptured, PaymentRefunded]
    key, refund = events[1]
    assert key == r.order_id
    assert refund == PaymentRefunded(
        order_id=r.order_id,
        customer_id=c,
        payment_id=row["payment_id"],
        amount_cents=1200,
        reason=reason,
        failed_step=failed_step,
        refunded_at=refund.refunded_at,  # type: ignore[attr-defined]
    )


async def test_a_declined_payment_is_not_refunded(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 10))
    r = reserved(c, 1200)
    await deliver(ctx, r)
    await deliver(ctx, cancelled(r, "payments"))
    await deliver(ctx, shipment_failed(r))
    assert await account(ctx, c) == (10, 10, 0, 0)
    row = await payment(ctx, r.order_id)
    assert row is not None and row["status"] == "DECLINED"
    assert [type(e) for _, e in await emitted(ctx)] == [PaymentDeclined]


async def test_a_cancel_before_the_reservation_leaves_a_tombstone_that_prevents_capture(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 5000))
    r = reserved(c, 1000)
    await deliver(ctx, cancelled(r))
    await deliver(ctx, cancelled(r))  # a second cancel keeps the one tombstone
    assert await tombstoned(ctx, r.order_id)
    await deliver(ctx, r)
    assert await account(ctx, c) == (5000, 5000, 0, 0)
    assert await payment(ctx, r.order_id) is None
    assert await emitted(ctx) == []
    # Other orders of the same customer are charged as usual.
    other = reserved(c, 1000)
    await deliver(ctx, other)
    assert [type(e) for _, e in await emitted(ctx)] == [PaymentCaptured]


async def test_a_shipment_failure_for_an_unknown_order_is_ignored(ctx):
    r = reserved(customer(), 100)
    await deliver(ctx, shipment_failed(r))
    assert await payment(ctx, r.order_id) is None
    assert not await tombstoned(ctx, r.order_id)
    assert await emitted(ctx) == []


async def test_http_reads_accounts_and_payments_with_json_404s(ctx):
    c = customer()
    await deliver(ctx, deposit(c, 700))
    r = reserved(c, 300)
    await deliver(ctx, r)
    row = await payment(ctx, r.order_id)
    assert row is not None
    async with http_client(ctx) as http:
        got = await http.get(f"/api/v1/accounts/{c}")
        assert got.status_code == 200
        assert got.json() == {
            "customer_id": c,
            "balance_cents": 400,
            "deposited_cents": 700,
            "captured_cents": 300,
            "refunded_cents": 0,
        }
        got = await http.get(f"/api/v1/payments/{r.order_id}")
        assert got.json() == {
            "order_id": r.order_id,
            "payment_id": row["payment_id"],
            "status": "CAPTURED",
            "amount_cents": 300,
        }
        for path in ("/api/v1/accounts/nobody", f"/api/v1/payments/{uuid.uuid4()}"):
            got = await http.get(path)
            assert got.status_code == 404 and "detail" in got.json()
        for path in ("/api/v1/payments/not-a-uuid", f"/api/v1/accounts/{'x' * 300}"):
            got = await http.get(path)
            assert got.status_code == 422, path
