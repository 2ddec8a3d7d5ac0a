"""The orders service follows each pending order's step and flags sagas past their deadline:
its handlers and watchdog against a real database (SQLite, or PostgreSQL with
CHOREO_TEST_DB=postgres) and the real outbox and codec. The watchdog is given the time it
scans at, so no test waits for a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from events.envelope import utcnow
from events.service import ServiceContext
from schemas.models import (
    Address,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    OrderPlaced,
    OrderStuck,
    PaymentCaptured,
    ShipmentScheduled,
    SkuPriced,
    StockReserved,
)
from services.orders.app import Settings, build_service
from services.orders.domain import Fact
from services.orders.handlers import apply_fact
from services.orders.repository import due_query
from services.orders.tables import orders
from services.orders.watchdog import Watchdog, WatchdogConfig, utc
from tests.integration.service_kit import (
    deliver,
    emitted,
    http_client,
    open_service,
    outbox_records,
)

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country="DE")
DEADLINE = timedelta(seconds=60)
PRICING = str(uuid.uuid4())


def watchdog(ctx: ServiceContext, time_out: bool = False) -> Watchdog:
    config = WatchdogConfig(scan_interval=timedelta(seconds=1), time_out=time_out, batch=2)
    return Watchdog(ctx.db, ctx.outbox, config)


@pytest.fixture
def db_url(database_url: Callable[[str], str]) -> str:
    return database_url("orders")


@contextlib.asynccontextmanager
async def opened(tmp_path: Path, url: str, **settings: Any) -> AsyncIterator[ServiceContext]:
    """The orders service, knowing the price of the SKU the tests order (SKU-1 at 150)."""
    async with open_service(
        build_service, Settings, tmp_path, url, saga_deadline_s=DEADLINE.total_seconds(), **settings
    ) as ctx:
        price = SkuPriced(sku="SKU-1", unit_price_cents=150, restock_id=PRICING, priced_at=utcnow())
        await deliver(ctx, price)
        yield ctx


@pytest.fixture
async def ctx(tmp_path: Path, db_url: str) -> AsyncIterator[ServiceContext]:
    async with opened(tmp_path, db_url) as context:
        yield context


def placed(customer: str = "cust-1") -> OrderPlaced:
    return OrderPlaced(
        order_id=str(uuid.uuid4()),
        customer_id=customer,
        lines=[OrderLine(sku="SKU-1", quantity=2, unit_price_cents=150)],
        shipping_address=ADDRESS,
        placed_at=utcnow(),
    )


def reserved(order_id: str, at: datetime) -> StockReserved:
    return StockReserved(
        order_id=order_id,
        customer_id="cust-1",
        lines=[{"sku": "SKU-1", "quantity": 2}],
        total_cents=300,
        shipping_address=ADDRESS,
        reserved_at=at,
    )


def captured(order_id: str, at: datetime) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=order_id,
        customer_id="cust-1",
        payment_id="PAY-1",
        amount_cents=300,
        shipping_address=ADDRESS,
        captured_at=at,
    )


async def order_row(ctx: ServiceContext, order_id: str) -> dict[str, Any]:
    async with ctx.db.session() as s:
        query = select(orders).where(orders.c.order_id == order_id)
        row = (await s.execute(query)).mappings().one()
    out = dict(row)
    for name in ("created_at", "deadline_at", "waiting_since", "stuck_at"):
        if out[name] is not None:
            out[name] = utc(out[name])
    return out


async def stuck_reports(ctx: ServiceContext) -> list[OrderStuck]:
    return [p for _, p in await emitted(ctx) if isinstance(p, OrderStuck)]


async def test_an_order_waits_on_each_step_in_turn_and_never_goes_back(ctx: ServiceContext):
    order = placed()
    await deliver(ctx, order)
    row = await order_row(ctx, order.order_id)
    assert (row["waiting_on"], row["waiting_since"]) == ("inventory", row["created_at"])
    assert row["deadline_at"] == row["created_at"] + DEADLINE
    assert row["stuck_at"] is None

    t1, t2 = row["created_at"] + timedelta(seconds=1), row["created_at"] + timedelta(seconds=2)
    capture, reservation = captured(order.order_id, t2), reserved(order.order_id, t1)
    await deliver(ctx, capture)  # the capture overtook the reservation (another topic)
    row = await order_row(ctx, order.order_id)
    assert (row["waiting_on"], row["waiting_since"]) == ("shipping", capture.captured_at)
    await deliver(ctx, reservation)
    row = await order_row(ctx, order.order_id)
    assert (row["waiting_on"], row["waiting_since"]) == ("shipping", capture.captured_at)
    assert row["status"] == "PENDING"

    ended = ShipmentScheduled(
        order_id=order.order_id,
        customer_id="cust-1",
        shipment_id="SHP-1",
        carrier="DHL",
        shipping_address=ADDRESS,
        scheduled_at=t2,
    )
    await deliver(ctx, ended)
    row = await order_row(ctx, order.order_id)
    assert row["status"] == "COMPLETED" and row["waiting_on"] is None


async def test_an_overdue_order_is_reported_stuck_once_in_its_saga(ctx: ServiceContext):
    order = placed()
    env = await deliver(ctx, order)
    other = placed()
    await deliver(ctx, other)
    await deliver(ctx, reserved(other.order_id, utcnow()))
    row = await order_row(ctx, order.order_id)
    due = row["deadline_at"]
    dog = watchdog(ctx)

    assert await dog.scan(due - timedelta(milliseconds=1)) == []
    flagged = await dog.scan(due + timedelta(seconds=5))
    assert sorted(flagged) == sorted([order.order_id, other.order_id])
    assert await dog.scan(due + timedelta(seconds=10)) == []  # once per step

    reports = {r.order_id: r for r in await stuck_reports(ctx)}
    assert len(reports) == 2
    report = reports[order.order_id]
    assert report.waiting_on == "inventory" and report.customer_id == "cust-1"
    assert report.waiting_since == row["created_at"].replace(
        microsecond=row["created_at"].microsecond // 1000 * 1000
    )
    assert report.deadline_at <= due and due - report.deadline_at < timedelta(milliseconds=1)
    assert abs(report.detected_at - (due + timedelta(seconds=5))) < timedelta(milliseconds=1)
    assert reports[other.order_id].waiting_on == "payments"

    row = await order_row(ctx, order.order_id)
    assert row["status"] == "PENDING" and row["stuck_at"] == due + timedelta(seconds=5)
    # In the saga's correlation, as every event the order caused.
    records = await outbox_records(ctx)
    created = next(r for r in records if r["type"] == "OrderCreated" and r["key"] == order.order_id)
    stuck = next(r for r in records if r["type"] == "OrderStuck" and r["key"] == order.order_id)
    assert stuck["cause"] is None  # the watchdog's own finding, caused by no event
    async with ctx.db.session() as s:
        headers = {
            event_type: json.loads(h)
            for event_type, h in await s.execute(
                text("SELECT event_type, headers FROM choreo_outbox WHERE key = :k"),
                {"k": order.order_id},
            )
        }
    assert headers["OrderStuck"]["correlation-id"] == env.correlation_id
    assert headers["OrderCreated"]["correlation-id"] == env.correlation_id
    assert created["cause"] == env.event_id

    async with http_client(ctx) as http:
        body = (await http.get(f"/api/v1/orders/{order.order_id}")).json()
    assert body["waiting_on"] == "inventory" and body["stuck_at"] is not None


async def test_an_order_that_moves_on_is_reported_again_at_the_next_step(ctx: ServiceContext):
    order = placed()
    await deliver(ctx, order)
    dog = watchdog(ctx)
    due = (await order_row(ctx, order.order_id))["deadline_at"]
    assert await dog.scan(due) == [order.order_id]
    await deliver(ctx, reserved(order.order_id, due + timedelta(seconds=1)))
    row = await order_row(ctx, order.order_id)
    assert row["waiting_on"] == "payments" and row["stuck_at"] is None
    assert await dog.scan(due + timedelta(seconds=2)) == [order.order_id]
    assert [r.waiting_on for r in await stuck_reports(ctx)] == ["inventory", "payments"]


async def test_ended_and_timely_orders_are_left_alone(ctx: ServiceContext):
    early, late = placed(), placed()
    await deliver(ctx, early)
    await deliver(ctx, late)
    async with ctx.uow() as uow:  # a customer's cancel
        await apply_fact(uow, early.order_id, Fact.CANCEL_REQUESTED, "changed my mind")
        await uow.commit()
    due = (await order_row(ctx, late.order_id))["deadline_at"]
    assert await watchdog(ctx).scan(due - timedelta(seconds=1)) == []
    assert await watchdog(ctx).scan(due + timedelta(days=1)) == [late.order_id]


async def test_deadlines_survive_a_restart(tmp_path: Path, db_url: str):
    order = placed()
    async with opened(tmp_path, db_url) as first:
        await deliver(first, order)
        due = (await order_row(first, order.order_id))["deadline_at"]
    # A new process over the same database: the deadline is a row, not a timer.
    async with opened(tmp_path, db_url) as second:
        assert await watchdog(second).scan(due + timedelta(seconds=1)) == [order.order_id]
        assert [r.order_id for r in await stuck_reports(second)] == [order.order_id]


async def test_two_watchdogs_flag_each_order_once(tmp_path: Path, db_url: str):
    async with contextlib.AsyncExitStack() as contexts:
        one = await contexts.enter_async_context(opened(tmp_path, db_url))
        # On PostgreSQL, two engines (as two orders processes); SQLite databases are served
        # by one process each (one connection per service engine, see events.db), so
        # there the two watchdogs share it and interleave between their transactions.
        two = one
        if not one.db.is_sqlite:
            two = await contexts.enter_async_context(opened(tmp_path, db_url))
        mine = [placed() for _ in range(7)]
        for order in mine:
            await deliver(one, order)
        due = max([(await order_row(one, o.order_id))["deadline_at"] for o in mine])
        at = due + timedelta(seconds=1)
        a, b = await asyncio.gather(watchdog(one).scan(at), watchdog(two).scan(at))
        assert sorted(a + b) == sorted(o.order_id for o in mine)
        assert not set(a) & set(b)
        reports = await stuck_reports(one)
        assert sorted(r.order_id for r in reports) == sorted(o.order_id for o in mine)


async def test_with_time_outs_an_overdue_order_is_cancelled_naming_the_step(
    tmp_path: Path, db_url: str
):
    async with opened(tmp_path, db_url, saga_timeout_enabled=True) as ctx:
        order = placed()
        await deliver(ctx, order)
        row = await order_row(ctx, order.order_id)
        await deliver(ctx, reserved(order.order_id, row["created_at"]))
        await deliver(ctx, captured(order.order_id, row["created_at"]))
        dog = watchdog(ctx, time_out=True)
        assert await dog.scan(row["deadline_at"]) == [order.order_id]

        row = await order_row(ctx, order.order_id)
        assert row["status"] == "CANCELLED" and row["failed_step"] == "shipping"
        assert row["reason"] == "timed out waiting on shipping" and row["waiting_on"] is None
        records = [r for r in await outbox_records(ctx) if r["key"] == order.order_id]
        assert [r["type"] for r in records] == ["OrderCreated", "OrderStuck", "OrderCancelled"]
        cancelled = records[2]
        payload = OrderCancelled.model_validate(
            {k: v for k, v in cancelled.items() if k not in ("type", "topic", "key", "cause")}
        )
        assert (payload.reason, payload.failed_step) == (
            "timed out waiting on shipping",
            "shipping",
        )
        async with ctx.db.session() as s:
            (stuck_id,) = (
                await s.execute(
                    text(
                        "SELECT event_id FROM choreo_outbox WHERE key = :k "
                        "AND event_type = 'OrderStuck'"
                    ),
                    {"k": order.order_id},
                )
            ).one()
        assert cancelled["cause"] == stuck_id  # the compensations follow the report

        # The shipment shows up after all: too late, recorded and ignored, like a late cancel.
        await deliver(
            ctx,
            ShipmentScheduled(
                order_id=order.order_id,
                customer_id="cust-1",
                shipment_id="SHP-1",
                carrier="DHL",
                shipping_address=ADDRESS,
                scheduled_at=utcnow(),
            ),
        )
        row = await order_row(ctx, order.order_id)
        assert row["status"] == "CANCELLED"
        assert json.loads(row["late_facts"]) == ["ShipmentScheduled"]
        assert await dog.scan(row["deadline_at"] + timedelta(days=1)) == []


async def test_the_scan_reads_the_partial_index(ctx: ServiceContext):
    if not ctx.db.is_sqlite:
        pytest.skip("the plan checked is SQLite's")
    async with ctx.db.session() as s:
        conn = await s.connection()
        compiled = due_query(datetime.now(UTC), 10).compile(dialect=conn.dialect)
        params = compiled.construct_params()
        processors = compiled._bind_processors
        args = tuple(
            processors[name](params[name]) if name in processors else params[name]
            for name in compiled.positiontup or ()
        )
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)).all()
    assert "ix_orders_orders_overdue" in " ".join(str(r) for r in plan), plan


async def test_the_created_event_carries_what_the_row_says(ctx: ServiceContext):
    order = placed()
    await deliver(ctx, order)
    (created,) = [p for _, p in await emitted(ctx) if isinstance(p, OrderCreated)]
    row = await order_row(ctx, order.order_id)
    assert created.created_at <= row["created_at"] < created.created_at + timedelta(milliseconds=1)
