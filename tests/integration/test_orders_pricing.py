"""Orders prices every order from the platform's prices (its replica of inventory's SkuPriced
facts), never from the client: the HTTP API and the OrderPlaced request, against a real
database (SQLite, or PostgreSQL with CHOREO_TEST_DB=postgres) and the real outbox and codec.
Inventory's restock with a price is driven through inventory's own handler and the SkuPriced
it emits is handed to orders, as the broker would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from events.envelope import utcnow
from events.routing import Refusal
from events.service import ServiceContext
from schemas.models import Address, OrderCreated, OrderLine, OrderPlaced, SkuPriced, StockRestocked
from services.inventory.app import SERVICE as INVENTORY
from services.inventory.app import Settings as InventorySettings
from services.orders.app import Settings, build_service
from tests.integration.service_kit import deliver, emitted, http_client, open_service

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country="DE")


@pytest.fixture
async def ctx(tmp_path: Path, database_url: Callable[[str], str]) -> AsyncIterator[ServiceContext]:
    async with open_service(build_service, Settings, tmp_path, database_url("orders")) as c:
        yield c


@pytest.fixture
async def inventory(
    tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[ServiceContext]:
    url = database_url("inventory")
    async with open_service(INVENTORY, InventorySettings, tmp_path, url) as c:
        yield c


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def priced(sku_: str, cents: int) -> SkuPriced:
    return SkuPriced(
        sku=sku_, unit_price_cents=cents, restock_id=str(uuid.uuid4()), priced_at=utcnow()
    )


def body(*lines: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": "cust-1",
        "lines": list(lines),
        "shipping_address": ADDRESS.model_dump(),
    }


async def created(ctx: ServiceContext) -> list[OrderCreated]:
    return [e for _, e in await emitted(ctx) if isinstance(e, OrderCreated)]


async def test_a_line_without_a_price_is_priced_by_the_platform(ctx: ServiceContext):
    a, b = sku(), sku()
    await deliver(ctx, priced(a, 150))
    await deliver(ctx, priced(b, 1_000))
    sent = body({"sku": a, "quantity": 2}, {"sku": b, "quantity": 1, "unit_price_cents": 1_000})
    async with http_client(ctx) as http:
        r = await http.post("/api/v1/orders", json=sent)
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["total_cents"] == 2 * 150 + 1_000
    assert [line["unit_price_cents"] for line in view["lines"]] == [150, 1_000]
    (event,) = await created(ctx)
    assert event.total_cents == 1_300
    assert [(ln.sku, ln.unit_price_cents) for ln in event.lines] == [(a, 150), (b, 1_000)]


async def test_an_unknown_sku_is_a_422_naming_it_and_nothing_is_written(ctx: ServiceContext):
    known, unknown = sku(), sku()
    await deliver(ctx, priced(known, 150))
    sent = body({"sku": known, "quantity": 1}, {"sku": unknown, "quantity": 1})
    async with http_client(ctx) as http:
        r = await http.post("/api/v1/orders", json=sent)
        missing = await http.get(f"/api/v1/orders/{sent['order_id']}")
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["body", "lines", 1, "sku"]
    assert problem["type"] == "unknown_sku"
    assert unknown in problem["msg"]
    assert missing.status_code == 404
    assert await created(ctx) == []


async def test_a_client_price_that_differs_is_a_422_naming_both_prices(ctx: ServiceContext):
    a = sku()
    await deliver(ctx, priced(a, 150))
    sent = body({"sku": a, "quantity": 1, "unit_price_cents": 1})
    async with http_client(ctx) as http:
        r = await http.post("/api/v1/orders", json=sent)
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["body", "lines", 0, "unit_price_cents"]
    assert problem["type"] == "price_mismatch"
    assert a in problem["msg"] and "1 is not the platform's price 150" in problem["msg"]
    assert await created(ctx) == []


async def test_a_restock_with_a_new_price_changes_the_next_orders_total(
    ctx: ServiceContext, inventory: ServiceContext
):
    a = sku()

    async def restock(cents: int | None) -> None:
        request = StockRestocked(
            restock_id=str(uuid.uuid4()),
            sku=a,
            quantity=5,
            restocked_at=utcnow(),
            unit_price_cents=cents,
        )
        before = len(await emitted(inventory))
        await deliver(inventory, request)
        for _, fact in (await emitted(inventory))[before:]:
            if isinstance(fact, SkuPriced):
                await deliver(ctx, fact)  # what the broker carries from inventory to orders

    async def order_total() -> int:
        async with http_client(ctx) as http:
            r = await http.post("/api/v1/orders", json=body({"sku": a, "quantity": 2}))
        assert r.status_code == 201, r.text
        return int(r.json()["total_cents"])

    await restock(150)
    first = await order_total()
    await restock(None)  # stock only: the price stays
    second = await order_total()
    await restock(175)
    third = await order_total()
    assert (first, second, third) == (300, 300, 350)
    async with http_client(ctx) as http:
        price = (await http.get(f"/api/v1/prices/{a}")).json()
    async with http_client(inventory) as http:
        stock = (await http.get(f"/api/v1/stock/{a}")).json()
    assert price["unit_price_cents"] == stock["unit_price_cents"] == 175


async def test_the_price_of_a_sku_never_priced_is_a_404(ctx: ServiceContext):
    async with http_client(ctx) as http:
        r = await http.get(f"/api/v1/prices/{sku()}")
    assert r.status_code == 404
    assert "has no price" in r.json()["detail"]


async def test_an_order_placed_by_event_is_priced_the_same_way(ctx: ServiceContext):
    a = sku()
    await deliver(ctx, priced(a, 150))

    def placed(sku_: str, cents: int) -> OrderPlaced:
        return OrderPlaced(
            order_id=str(uuid.uuid4()),
            customer_id="cust-1",
            lines=[OrderLine(sku=sku_, quantity=2, unit_price_cents=cents)],
            shipping_address=ADDRESS,
            placed_at=utcnow(),
        )

    # Refused (dead-lettered with the reason by the consumer runtime), nothing created.
    with pytest.raises(Refusal, match=r"unknown SKU"):
        await deliver(ctx, placed(sku(), 150))
    with pytest.raises(Refusal, match=r"unit_price_cents 99 is not the platform's price 150"):
        await deliver(ctx, placed(a, 99))
    assert await created(ctx) == []
    await deliver(ctx, placed(a, 150))
    assert [e.total_cents for e in await created(ctx)] == [300]
