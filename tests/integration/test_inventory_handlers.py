"""Inventory's handlers against a real SQLite database and the real outbox and codec."""

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
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderLine,
    PaymentDeclined,
    PaymentRefunded,
    Shortage,
    SkuPriced,
    StockLine,
    StockReceived,
    StockRejected,
    StockReleased,
    StockReserved,
    StockRestocked,
)
from services.inventory.app import SERVICE, Settings
from services.inventory.tables import reservations, stock
from tests.integration.service_kit import deliver, http_client, service_fixture
from tests.integration.service_kit import emitted as outbox_events

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country="DE")
ctx = service_fixture(SERVICE, Settings)


async def levels(ctx: ServiceContext) -> dict[str, tuple[int, int, int, int]]:
    """(on_hand, reserved, shipped, received) per SKU; checks the books balance."""
    async with ctx.db.session() as s:
        rows = (await s.execute(select(stock))).mappings().all()
    out = {}
    for r in rows:
        assert r["on_hand"] + r["reserved"] == r["received"] - r["shipped"]
        out[r["sku"]] = (r["on_hand"], r["reserved"], r["shipped"], r["received"])
    return out


async def reservation(ctx: ServiceContext, order_id: str) -> dict[str, Any] | None:
    query = select(reservations).where(reservations.c.order_id == order_id)
    async with ctx.db.session() as s:
        row = (await s.execute(query)).mappings().first()
    return dict(row) if row is not None else None


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def restock(
    sku_: str, quantity: int, restock_id: str | None = None, price: int | None = None
) -> StockRestocked:
    return StockRestocked(
        restock_id=restock_id or str(uuid.uuid4()),
        sku=sku_,
        quantity=quantity,
        restocked_at=utcnow(),
        unit_price_cents=price,
    )


def order(*lines: tuple[str, int], customer_id: str = "cust-1") -> OrderCreated:
    order_lines = [OrderLine(sku=s, quantity=q, unit_price_cents=250) for s, q in lines]
    return OrderCreated(
        order_id=str(uuid.uuid4()),
        customer_id=customer_id,
        lines=order_lines,
        total_cents=sum(line.quantity * 250 for line in order_lines),
        shipping_address=ADDRESS,
        created_at=utcnow(),
    )


def cancelled(o: OrderCreated, failed_step: str | None = None) -> OrderCancelled:
    return OrderCancelled(
        order_id=o.order_id,
        customer_id=o.customer_id,
        reason="changed my mind",
        failed_step=failed_step,
        cancelled_at=utcnow(),
    )


def declined(o: OrderCreated) -> PaymentDeclined:
    return PaymentDeclined(
        order_id=o.order_id,
        customer_id=o.customer_id,
        amount_cents=o.total_cents,
        reason="insufficient funds",
        balance_cents=0,
        declined_at=utcnow(),
    )


def refunded(o: OrderCreated) -> PaymentRefunded:
    return PaymentRefunded(
        order_id=o.order_id,
        customer_id=o.customer_id,
        payment_id=str(uuid.uuid4()),
        amount_cents=o.total_cents,
        reason="address not serviceable: XX",
        failed_step="shipping",
        refunded_at=utcnow(),
    )


def completed(o: OrderCreated) -> OrderCompleted:
    return OrderCompleted(
        order_id=o.order_id,
        customer_id=o.customer_id,
        total_cents=o.total_cents,
        shipment_id=str(uuid.uuid4()),
        completed_at=utcnow(),
    )


async def emitted(ctx: ServiceContext) -> list[tuple[str, Any]]:
    """The saga's events inventory emitted (the facts of counted restocks and prices left
    out)."""
    facts = (StockReceived, SkuPriced)
    return [(k, e) for k, e in await outbox_events(ctx) if not isinstance(e, facts)]


async def prices(ctx: ServiceContext) -> list[tuple[str, str, int]]:
    """(key, restock id, price) of each SkuPriced fact, in write order."""
    return [
        (k, e.restock_id, e.unit_price_cents)
        for k, e in await outbox_events(ctx)
        if isinstance(e, SkuPriced)
    ]


async def received(ctx: ServiceContext) -> list[tuple[str, str, int]]:
    """(key, restock id, quantity) of each StockReceived fact, in write order."""
    return [
        (k, e.restock_id, e.quantity)
        for k, e in await outbox_events(ctx)
        if isinstance(e, StockReceived)
    ]


async def test_restocks_add_up_and_the_same_restock_counts_once(ctx):
    a = sku()
    first = restock(a, 5)
    await deliver(ctx, first)
    second = restock(a, 3)
    await deliver(ctx, second)
    await deliver(ctx, first)  # redelivered with its event id lost
    await deliver(ctx, restock(a, 5, restock_id=first.restock_id))  # re-sent as a new event
    assert (await levels(ctx))[a] == (8, 0, 0, 8)
    assert await emitted(ctx) == []
    # One fact per counted restock, keyed by the SKU: the re-sent one has none.
    assert await received(ctx) == [(a, first.restock_id, 5), (a, second.restock_id, 3)]


async def test_a_restock_that_names_a_new_price_publishes_it_once(ctx):
    a = sku()
    first = restock(a, 5, price=150)
    await deliver(ctx, first)
    await deliver(ctx, restock(a, 1))  # no price: keeps 150
    await deliver(ctx, restock(a, 1, price=150))  # the same price: nothing to say
    await deliver(ctx, restock(a, 1, restock_id=first.restock_id, price=999))  # a repeat
    changed = restock(a, 2, price=175)
    await deliver(ctx, changed)
    assert await prices(ctx) == [(a, first.restock_id, 150), (a, changed.restock_id, 175)]
    assert (await levels(ctx))[a] == (9, 0, 0, 9)
    async with http_client(ctx) as http:
        assert (await http.get(f"/api/v1/stock/{a}")).json()["unit_price_cents"] == 175


async def test_a_refused_restock_sets_no_price(ctx):
    a = sku()
    await deliver(ctx, restock(a, 1, price=100))
    async with ctx.db.session() as s, s.begin():
        await s.execute(
            stock.update().where(stock.c.sku == a).values(on_hand=2**63 - 2, received=2**63 - 2)
        )
    with pytest.raises(PermanentError, match="would pass"):
        await deliver(ctx, restock(a, 2, price=200))
    assert [p for _, _, p in await prices(ctx)] == [100]


async def test_a_restock_past_the_64_bit_range_is_refused_and_counts_nothing(ctx):
    a = sku()
    await deliver(ctx, restock(a, 1))
    # A restock is a 32-bit quantity: reaching 2^63 would take billions, so start near it.
    async with ctx.db.session() as s, s.begin():
        await s.execute(
            stock.update().where(stock.c.sku == a).values(on_hand=2**63 - 2, received=2**63 - 2)
        )
    with pytest.raises(PermanentError, match="would pass"):
        await deliver(ctx, restock(a, 2))
    assert (await levels(ctx))[a][3] == 2**63 - 2
    assert len(await received(ctx)) == 1


async def test_an_order_is_reserved_whole_and_said_so(ctx):
    a, b = sku(), sku()
    await deliver(ctx, restock(a, 5))
    await deliver(ctx, restock(b, 2))
    o = order((a, 3), (b, 2), (a, 1))
    await deliver(ctx, o)
    assert (await levels(ctx)) == {a: (1, 4, 0, 5), b: (0, 2, 0, 2)}
    row = await reservation(ctx, o.order_id)
    assert row is not None and row["status"] == "RESERVED"
    [(key, event)] = await emitted(ctx)
    assert key == o.order_id
    assert event == StockReserved(
        order_id=o.order_id,
        customer_id="cust-1",
        lines=[
            StockLine(sku=a, quantity=3),
            StockLine(sku=b, quantity=2),
            StockLine(sku=a, quantity=1),
        ],
        total_cents=o.total_cents,
        shipping_address=ADDRESS,
        reserved_at=event.reserved_at,  # type: ignore[attr-defined]
    )


async def test_a_short_order_moves_no_stock_and_names_each_short_sku(ctx):
    a, b, unknown = sku(), sku(), sku()
    await deliver(ctx, restock(a, 5))
    await deliver(ctx, restock(b, 1))
    o = order((a, 2), (b, 1), (b, 1), (unknown, 4))
    await deliver(ctx, o)
    assert (await levels(ctx)) == {a: (5, 0, 0, 5), b: (1, 0, 0, 1)}
    row = await reservation(ctx, o.order_id)
    assert row is not None and row["status"] == "REJECTED" and "insufficient stock" in row["reason"]
    [(key, event)] = await emitted(ctx)
    assert key == o.order_id and isinstance(event, StockRejected)
    assert event.customer_id == "cust-1"
    assert event.shortages == [
        Shortage(sku=b, requested=2, available=1),
        Shortage(sku=unknown, requested=4, available=0),
    ]
    await deliver(ctx, cancelled(o, "inventory"))  # nothing was held: nothing to release
    assert len(await emitted(ctx)) == 1


async def test_a_redelivered_order_is_reserved_once(ctx):
    a = sku()
    await deliver(ctx, restock(a, 10))
    o = order((a, 4))
    event_id = str(uuid.uuid4())
    await deliver(ctx, o, event_id=event_id)
    await deliver(ctx, o, event_id=event_id)
    await deliver(ctx, o)
    assert (await levels(ctx))[a] == (6, 4, 0, 10)
    assert [type(e) for _, e in await emitted(ctx)] == [StockReserved]


@pytest.mark.parametrize(
    ("compensation", "reason", "failed_step"),
    [
        (declined, "insufficient funds", "payments"),
        (refunded, "address not serviceable: XX", "shipping"),
        (lambda o: cancelled(o, "payments"), "changed my mind", "payments"),
        (lambda o: cancelled(o), "changed my mind", None),
    ],
    ids=["payment-declined", "payment-refunded", "order-cancelled", "cancel-requested"],
)
async def test_a_compensation_releases_once(ctx, compensation, reason, failed_step):
    a = sku()
    await deliver(ctx, restock(a, 10))
    o = order((a, 4))
    await deliver(ctx, o)
    await deliver(ctx, compensation(o))
    assert (await levels(ctx))[a] == (10, 0, 0, 10)
    row = await reservation(ctx, o.order_id)
    assert row is not None and row["status"] == "RELEASED" and row["reason"] == reason
    # The other compensations arriving later, and this one again, change nothing.
    for late in (compensation(o), declined(o), refunded(o), cancelled(o, "shipping")):
        await deliver(ctx, late)
    assert (await levels(ctx))[a] == (10, 0, 0, 10)
    events = await emitted(ctx)
    assert [type(e) for _, e in events] == [StockReserved, StockReleased]
    key, released = events[1]
    assert key == o.order_id
    assert released == StockReleased(
        order_id=o.order_id,
        customer_id="cust-1",
        lines=[StockLine(sku=a, quantity=4)],
        reason=reason,
        failed_step=failed_step,
        released_at=released.released_at,  # type: ignore[attr-defined]
    )


async def test_a_completed_order_ships_silently_once_and_is_never_released(ctx):
    a = sku()
    await deliver(ctx, restock(a, 10))
    o = order((a, 4))
    await deliver(ctx, o)
    await deliver(ctx, completed(o))
    await deliver(ctx, completed(o))
    await deliver(ctx, cancelled(o))
    assert (await levels(ctx))[a] == (6, 0, 4, 10)
    row = await reservation(ctx, o.order_id)
    assert row is not None and row["status"] == "SHIPPED"
    assert [type(e) for _, e in await emitted(ctx)] == [StockReserved]


async def test_facts_about_unknown_orders_are_ignored(ctx):
    o = order((sku(), 1))
    for fact in (declined(o), refunded(o), cancelled(o), completed(o)):
        await deliver(ctx, fact)
    assert await reservation(ctx, o.order_id) is None
    assert await emitted(ctx) == []


async def test_a_released_sku_can_be_reserved_by_the_next_order(ctx):
    a = sku()
    await deliver(ctx, restock(a, 3))
    first, second = order((a, 3)), order((a, 3))
    await deliver(ctx, first)
    await deliver(ctx, second)
    await deliver(ctx, declined(first))
    third = order((a, 3))
    await deliver(ctx, third)
    kinds = [(key, type(e)) for key, e in await emitted(ctx)]
    assert kinds == [
        (first.order_id, StockReserved),
        (second.order_id, StockRejected),
        (first.order_id, StockReleased),
        (third.order_id, StockReserved),
    ]
    assert (await levels(ctx))[a] == (0, 3, 0, 3)


async def test_http_reads_stock_and_reservations_with_json_404s(ctx):
    a = sku()
    await deliver(ctx, restock(a, 7))
    o = order((a, 2))
    await deliver(ctx, o)
    async with http_client(ctx) as http:
        got = await http.get(f"/api/v1/stock/{a}")
        assert got.status_code == 200
        assert got.json() == {
            "sku": a,
            "on_hand": 5,
            "reserved": 2,
            "shipped": 0,
            "received": 7,
            "unit_price_cents": None,  # no restock named a price
        }
        got = await http.get(f"/api/v1/reservations/{o.order_id}")
        assert got.json() == {
            "order_id": o.order_id,
            "status": "RESERVED",
            "lines": [{"sku": a, "quantity": 2}],
        }
        got = await http.get(f"/api/v1/reservations/{o.order_id.upper()}")
        assert got.status_code == 200  # any spelling of the uuid finds the order
        for path in ("/api/v1/stock/nope", f"/api/v1/reservations/{uuid.uuid4()}"):
            got = await http.get(path)
            assert got.status_code == 404 and "detail" in got.json()
        for path in ("/api/v1/reservations/not-a-uuid", f"/api/v1/stock/{'x' * 300}"):
            got = await http.get(path)
            assert got.status_code == 422, path
