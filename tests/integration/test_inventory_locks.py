"""Two inventory instances sharing one PostgreSQL database: their batches lock shared stock rows
in one sorted order (the router's lock-ahead, as the consumer runs it before a batch's
handlers), so batches reserving the same SKUs in opposite orders wait on each other instead
of deadlocking. On SQLite a transaction holds the database's write lock: nothing to order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.service import ServiceContext
from schemas.models import (
    Address,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderLine,
    StockRestocked,
)
from services.inventory.app import SERVICE, Settings
from services.inventory.tables import reservations, stock
from tests.integration.service_kit import deliver, event_for, service_fixture, service_of
from tests.support import eventually

pytestmark = pytest.mark.integration

ctx = service_fixture(SERVICE, Settings)
ADDRESS = Address(name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country="DE")


def _order(sku: str, *more: tuple[str, int]) -> OrderCreated:
    lines = [(sku, 1), *more]
    return OrderCreated(
        order_id=str(uuid.uuid4()),
        customer_id="cust-1",
        lines=[OrderLine(sku=s, quantity=q, unit_price_cents=250) for s, q in lines],
        total_cents=250,
        shipping_address=ADDRESS,
        created_at=utcnow(),
    )


def _restock(sku: str, quantity: int) -> StockRestocked:
    return StockRestocked(
        restock_id=str(uuid.uuid4()), sku=sku, quantity=quantity, restocked_at=utcnow()
    )


async def _batch(
    ctx: ServiceContext,
    events: list[Event[Any]],
    *,
    ahead: bool,
    first_done: asyncio.Event,
    go: asyncio.Event,
) -> None:
    """One consumer batch in one transaction, paused after its first event until ``go``."""
    router = service_of(ctx).router
    assert router.lock_ahead is not None
    async with UnitOfWork(ctx.db, ctx.outbox) as uow:
        if ahead:
            await router.lock_ahead(uow, events)
        for index, event in enumerate(events):
            uow.cause = event.envelope
            await router.handlers[event.envelope.event_type].fn(uow, event)
            if index == 0:
                first_done.set()
                await go.wait()
        await uow.commit()


async def _waiting_on_a_lock(ctx: ServiceContext) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with ctx.db.session() as s:
        return int((await s.execute(query)).scalar_one())


async def _opposite_batches(
    ctx: ServiceContext, *, ahead: bool
) -> tuple[list[BaseException | None], set[str]]:
    """Batch one reserves SKU A then B, batch two B then A, interleaved so that each holds
    its first row before either asks for its second."""
    sku_a, sku_b = sorted(f"SKU-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for sku in (sku_a, sku_b):
        await deliver(ctx, _restock(sku, 10))
    one = [event_for(ctx, _order(sku_a)), event_for(ctx, _order(sku_b))]
    two = [event_for(ctx, _order(sku_b)), event_for(ctx, _order(sku_a))]
    one_started, two_started, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_batch(ctx, one, ahead=ahead, first_done=one_started, go=go))
    await asyncio.wait_for(one_started.wait(), 10)
    second = asyncio.create_task(_batch(ctx, two, ahead=ahead, first_done=two_started, go=go))

    async def second_holds_or_waits() -> bool:
        return two_started.is_set() or await _waiting_on_a_lock(ctx) > 0

    await eventually(second_holds_or_waits, deadline_s=10, what="the second batch to lock")
    go.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 60)
    orders = {e.payload.order_id for e in one + two}
    return list(outcomes), orders


@pytest.fixture
def postgres_only(ctx: ServiceContext) -> None:
    if ctx.db.is_sqlite:
        pytest.skip("row locks are PostgreSQL's (CHOREO_TEST_DB=postgres)")


@pytest.mark.usefixtures("postgres_only")
async def test_batches_locking_skus_in_opposite_orders_wait_instead_of_deadlocking(
    ctx: ServiceContext,
):
    outcomes, orders = await _opposite_batches(ctx, ahead=True)

    assert outcomes == [None, None]
    async with ctx.db.session() as s:
        held = (await s.execute(select(reservations.c.order_id, reservations.c.status))).all()
        levels = (await s.execute(select(stock.c.on_hand, stock.c.reserved))).all()
    assert {order_id for order_id, status in held if status == "RESERVED"} == orders
    assert sorted(levels) == [(8, 2), (8, 2)]


@pytest.mark.usefixtures("postgres_only")
async def test_without_the_lock_ahead_the_same_batches_deadlock(ctx: ServiceContext):
    """The interleaving above is a real deadlock when rows are locked event by event: the
    database fails one of the two transactions."""
    outcomes, _ = await _opposite_batches(ctx, ahead=False)

    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 1, outcomes
    assert "deadlock" in str(failures[0]).lower()


@pytest.mark.usefixtures("postgres_only")
async def test_a_batch_reads_the_rows_it_locked_ahead_as_its_own_writes_left_them(
    ctx: ServiceContext,
):
    """The handlers read the stock locked ahead from the session, not the database: a new
    SKU restocked, reserved, released and shipped within one batch must add up."""
    new_sku, old_sku = f"SKU-{uuid.uuid4().hex[:8]}", f"SKU-{uuid.uuid4().hex[:8]}"
    await deliver(ctx, _restock(old_sku, 10))
    first, second = _order(new_sku, (old_sku, 1)), _order(new_sku)
    cancelled = OrderCancelled(
        order_id=first.order_id, customer_id="cust-1", reason="changed", cancelled_at=utcnow()
    )
    completed = OrderCompleted(
        order_id=second.order_id,
        customer_id="cust-1",
        total_cents=250,
        shipment_id=str(uuid.uuid4()),
        completed_at=utcnow(),
    )
    batch = [_restock(new_sku, 5), first, second, cancelled, completed]
    done, go = asyncio.Event(), asyncio.Event()
    go.set()

    await _batch(ctx, [event_for(ctx, p) for p in batch], ahead=True, first_done=done, go=go)

    columns = (stock.c.sku, stock.c.on_hand, stock.c.reserved, stock.c.shipped, stock.c.received)
    async with ctx.db.session() as s:
        rows = {r[0]: tuple(r[1:]) for r in (await s.execute(select(*columns))).all()}
        statuses = dict(
            (await s.execute(select(reservations.c.order_id, reservations.c.status))).all()
        )
    assert rows == {new_sku: (4, 0, 1, 5), old_sku: (10, 0, 0, 10)}
    assert statuses == {first.order_id: "RELEASED", second.order_id: "SHIPPED"}
