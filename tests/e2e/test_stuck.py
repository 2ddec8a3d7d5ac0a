"""Stuck sagas end to end: with the shipping service down, orders that would otherwise
succeed are reported stuck at the shipping step once their deadline passes; with time-outs
enabled they end CANCELLED instead and every other service undoes its part."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from events.kafka import KafkaConnection
from services.saga_check import (
    SERVICEABLE,
    World,
    order_body,
    place_http,
    seed,
    statuses,
)
from tests.e2e.conftest import Stack
from tests.e2e.test_saga import invariants_hold, settle
from tests.support import eventually
from tests.tokens import operator_headers

pytestmark = pytest.mark.e2e

DEADLINE_S = 5  # inventory and payments answer well within it; shipping never does
ORDERS = 4
PRICE = 700


@pytest.fixture
async def query(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{stack.spec('query').port}/api/v1"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=operator_headers()) as http:
        yield http


async def without_shipping(stack: Stack, **settings: str) -> None:
    """Shipping down, and orders restarted with a short saga deadline (and ``settings``)."""
    await asyncio.to_thread(stack.stop, "shipping", "orders")
    stack.env.update(SAGA_DEADLINE_S=str(DEADLINE_S), STUCK_SCAN_INTERVAL_S="0.5", **settings)
    await asyncio.to_thread(stack.start, "orders")


async def place_orders(world: World, stack: Stack) -> list[str]:
    await seed(
        world,
        stack.codec,
        KafkaConnection(stack.bootstrap),
        stack.api,
        stock={"widget": 50},
        deposits={"ada": 1_000_000},
        prices={"widget": PRICE},
    )
    return [
        await place_http(
            world,
            stack.api,
            "stuck at shipping",
            order_body(world, "ada", [("widget", 2, PRICE)], SERVICEABLE),
        )
        for _ in range(ORDERS)
    ]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_orders_are_reported_stuck_at_shipping_until_it_comes_back(
    stack: Stack, query: httpx.AsyncClient
):
    await without_shipping(stack)
    world = World()
    placed = await place_orders(world, stack)
    customer = world.customer("ada")

    stuck: dict[str, Any] = {}

    async def all_stuck_at_shipping() -> bool:
        r = await query.get("/orders", params={"stuck": "true", "customer_id": customer})
        items = r.json()["items"] if r.status_code == 200 else []
        stuck.clear()
        stuck.update({o["order_id"]: o for o in items if o["stuck"]["waiting_on"] == "shipping"})
        return set(stuck) == set(placed)

    await eventually(
        all_stuck_at_shipping, deadline_s=DEADLINE_S + 60, poll_s=0.25, what="stuck at shipping"
    )
    for order in stuck.values():
        report = order["stuck"]
        assert order["status"] == "PENDING" and order["payment_status"] == "CAPTURED"
        assert at(report["deadline_at"]) - at(order["created_at"]) == timedelta(seconds=DEADLINE_S)
        assert at(report["detected_at"]) >= at(report["deadline_at"])
        assert at(report["waiting_since"]) >= at(order["created_at"])
        own = await stack.api.get("orders", f"/orders/{order['order_id']}")
        assert own["status"] == "PENDING" and own["waiting_on"] == "shipping"
        assert own["stuck_at"] is not None
        timeline = (await query.get(f"/orders/{order['order_id']}/timeline")).json()["events"]
        reports = [e for e in timeline if e["event_type"] == "OrderStuck"]
        assert reports and all(e["service"] == "orders" for e in reports)
        assert len(reports) <= 3  # at most once per step
    stats = (await query.get("/stats")).json()
    assert stats["stuck"] >= ORDERS and stats["by_status"]["PENDING"] >= ORDERS

    # Shipping comes back: the orders complete and are no longer stuck.
    await asyncio.to_thread(stack.start, "shipping")
    rows = await settle(world, stack)
    assert {r["status"] for r in rows.values()} == {"COMPLETED"}

    async def none_stuck() -> bool:
        r = await query.get("/orders", params={"customer_id": customer})
        items = r.json()["items"]
        return len(items) == ORDERS and all(
            o["status"] == "COMPLETED" and o["stuck"] is None for o in items
        )

    await eventually(none_stuck, deadline_s=60, poll_s=0.25, what="the read side to follow")
    r = await query.get("/orders", params={"customer_id": customer, "stuck": "true"})
    assert r.json()["items"] == []


async def test_with_time_outs_stuck_orders_are_cancelled_and_compensated(
    stack: Stack, query: httpx.AsyncClient
):
    await without_shipping(stack, SAGA_TIMEOUT_ENABLED="true")
    world = World()
    placed = await place_orders(world, stack)
    sku, customer = world.sku("widget"), world.customer("ada")

    async def all_cancelled() -> bool:
        rows = await statuses(world, stack.api)
        return len(rows) == ORDERS and all(r["status"] == "CANCELLED" for r in rows.values())

    await eventually(all_cancelled, deadline_s=DEADLINE_S + 60, poll_s=0.25, what="the time-outs")
    for row in (await statuses(world, stack.api)).values():
        assert row["reason"] == "timed out waiting on shipping", row
        assert row["failed_step"] == "shipping" and row["waiting_on"] is None

    async def compensated() -> bool:
        for oid in placed:
            payment = await stack.api.get("payments", f"/payments/{oid}")
            reservation = await stack.api.get("inventory", f"/reservations/{oid}")
            if payment is None or payment["status"] != "REFUNDED":
                return False
            if reservation is None or reservation["status"] != "RELEASED":
                return False
        stock = await stack.api.get("inventory", f"/stock/{sku}")
        account = await stack.api.get("payments", f"/accounts/{customer}")
        return (
            stock["on_hand"] == 50
            and stock["reserved"] == 0
            and account["balance_cents"] == world.deposits[customer]
        )

    await eventually(compensated, deadline_s=60, poll_s=0.25, what="stock released, refunds")

    async def read_side_agrees() -> bool:
        for oid in placed:
            r = await query.get(f"/orders/{oid}")
            if r.status_code != 200:
                return False
            view = r.json()
            if (view["status"], view["failed_step"], view["stuck"]) != (
                "CANCELLED",
                "shipping",
                None,
            ):
                return False
            if (view["payment_status"], view["stock_status"]) != ("REFUNDED", "RELEASED"):
                return False
        return True

    await eventually(read_side_agrees, deadline_s=60, poll_s=0.25, what="the read side")
    timeline = (await query.get(f"/orders/{placed[0]}/timeline")).json()["events"]
    kinds = [e["event_type"] for e in timeline]
    assert kinds.index("OrderStuck") < kinds.index("OrderCancelled")
    assert {"PaymentRefunded", "StockReleased"} <= set(kinds)

    # Shipping comes back to a captured payment and a cancelled order: it ships nothing.
    await asyncio.to_thread(stack.start, "shipping")

    async def shipping_refused() -> bool:
        for oid in placed:
            r = await stack.api.http.get(stack.api.url("shipping", f"/shipments/{oid}"))
            cancelled_first = r.status_code == 404 and "cancelled" in r.json()["detail"]
            if not (
                cancelled_first or (r.status_code == 200 and r.json()["status"] == "CANCELLED")
            ):
                return False
        return True

    await eventually(shipping_refused, deadline_s=60, poll_s=0.25, what="shipping to refuse")
    await invariants_hold(world, stack, deadline_s=60)  # asks shipping too, so only once it is back
    rows = await statuses(world, stack.api)
    assert {r["status"] for r in rows.values()} == {"CANCELLED"}
