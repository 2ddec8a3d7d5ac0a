"""Stuck sagas on the read side: OrderStuck projected into the order view, the stuck and
newest-first listings, the counts, and the timeline; real events on the real broker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.test_query_kit import (
    ADDRESS,
    T0,
    QueryEnv,
    Saga,
    min_position,
    publish_saga,
    query_env,
)

pytestmark = pytest.mark.integration
__all__ = ["query_env"]

MINUTE = timedelta(minutes=1)


async def test_a_stuck_order_shows_where_it_waits_until_it_moves_on_or_ends(query_env: QueryEnv):
    saga = Saga()
    cust, sku = saga.customer("ada"), saga.sku("w")
    # Reserved and captured, then nothing: shipping is down.
    held = saga.cut(saga.order("success", cust, [(sku, 1, 100)]), 3)
    report = saga.stuck(held, "shipping", T0 + 5 * MINUTE, T0 + 2 * timedelta(seconds=1))
    waiting = saga.cut(saga.order("success", cust, [(sku, 1, 100)], at=T0 + MINUTE), 1)
    saga.stuck(waiting, "inventory", T0 + 6 * MINUTE, T0 + MINUTE, T0 + 6 * MINUTE)
    healthy = saga.order("success", cust, [(sku, 1, 100)], at=T0 + 2 * MINUTE)
    published = await publish_saga(query_env, saga)

    r = await query_env.get(f"/orders/{held.order_id}", min_position=min_position(published))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "PENDING"
    assert view["stuck"] == {
        "waiting_on": "shipping",
        "waiting_since": "2025-03-01T12:00:02Z",
        "deadline_at": "2025-03-01T12:05:00Z",
        "detected_at": "2025-03-01T12:05:00Z",
    }
    assert (await query_env.get(f"/orders/{healthy.order_id}")).json()["stuck"] is None

    r = await query_env.get("/orders", stuck="true")
    assert [o["order_id"] for o in r.json()["items"]] == [held.order_id, waiting.order_id]
    r = await query_env.get("/orders", stuck="false")
    assert [o["order_id"] for o in r.json()["items"]] == [healthy.order_id]
    r = await query_env.get("/stats")
    assert r.json() == {
        "by_status": {"PENDING": 2, "COMPLETED": 1, "REJECTED": 0, "CANCELLED": 0},
        "stuck": 2,
        "total": 3,
    }
    timeline = (await query_env.get(f"/orders/{held.order_id}/timeline")).json()["events"]
    assert [e["event_type"] for e in timeline][-1] == "OrderStuck"
    stuck_entry = timeline[-1]
    assert stuck_entry["event_id"] == report.event_id and stuck_entry["service"] == "orders"
    assert stuck_entry["correlation_id"] == held.events[0].draft.correlation_id

    # Inventory comes back: the order is past the step it was reported at (orders reports
    # it again if it is overdue at the next one). Shipping comes back: the order completes.
    later = Saga(run=saga.run)
    body = {"shipping_address": ADDRESS}
    later.emit(
        "inventory",
        "StockReserved",
        {
            **body,
            "order_id": waiting.order_id,
            "customer_id": cust,
            "lines": [{"sku": sku, "quantity": 1}],
            "total_cents": 100,
            "reserved_at": T0 + 7 * MINUTE,
        },
        waiting.order_id,
        T0 + 7 * MINUTE,
        waiting.events[0],
    )
    scheduled = later.emit(
        "shipping",
        "ShipmentScheduled",
        {
            **body,
            "order_id": held.order_id,
            "customer_id": cust,
            "shipment_id": "SHP-1",
            "carrier": "DHL",
            "scheduled_at": T0 + 8 * MINUTE,
        },
        held.order_id,
        T0 + 8 * MINUTE,
        held.events[2],
    )
    later.emit(
        "orders",
        "OrderCompleted",
        {
            "order_id": held.order_id,
            "customer_id": cust,
            "total_cents": 100,
            "shipment_id": "SHP-1",
            "completed_at": T0 + 8 * MINUTE,
        },
        held.order_id,
        T0 + 8 * MINUTE,
        scheduled,
    )
    published = await publish_saga(query_env, later)
    position = min_position(published)
    r = await query_env.get(f"/orders/{waiting.order_id}", min_position=position)
    assert r.json()["status"] == "PENDING" and r.json()["stuck"] is None
    r = await query_env.get(f"/orders/{held.order_id}")
    assert r.json()["status"] == "COMPLETED" and r.json()["stuck"] is None
    r = await query_env.get("/orders", stuck="true")
    assert r.json() == {"items": [], "next_cursor": None}
    r = await query_env.get("/stats")
    assert r.json() == {
        "by_status": {"PENDING": 1, "COMPLETED": 2, "REJECTED": 0, "CANCELLED": 0},
        "stuck": 0,
        "total": 3,
    }


async def test_a_stuck_order_that_times_out_is_no_longer_stuck(query_env: QueryEnv):
    saga = Saga()
    cust, sku = saga.customer("bo"), saga.sku("w")
    plan = saga.cut(saga.order("cancelled", cust, [(sku, 1, 100)]), 2)  # created, reserved
    stuck = saga.stuck(plan, "payments", T0 + 5 * MINUTE)
    cancelled = saga.emit(
        "orders",
        "OrderCancelled",
        {
            "order_id": plan.order_id,
            "customer_id": cust,
            "reason": "timed out waiting on payments",
            "failed_step": "payments",
            "cancelled_at": T0 + 5 * MINUTE,
        },
        plan.order_id,
        T0 + 5 * MINUTE,
        stuck,
    )
    plan.events.append(cancelled)
    published = await publish_saga(query_env, saga)
    r = await query_env.get(f"/orders/{plan.order_id}", min_position=min_position(published))
    view = r.json()
    assert (view["status"], view["failed_step"]) == ("CANCELLED", "payments")
    assert view["reason"] == "timed out waiting on payments" and view["stuck"] is None
    events = (await query_env.get(f"/orders/{plan.order_id}/timeline")).json()["events"]
    kinds = [e["event_type"] for e in events]
    assert kinds.index("OrderStuck") < kinds.index("OrderCancelled")  # the cause first
    assert (await query_env.get("/stats")).json()["stuck"] == 0


async def test_newest_first_pages_back_and_filters_combine(query_env: QueryEnv):
    saga = Saga()
    ada, bo, sku = saga.customer("ada"), saga.customer("bo"), saga.sku("w")
    mine = []
    for i in range(7):
        order = saga.order("success", ada, [(sku, 1, 10)], at=T0 + i * MINUTE)
        if i % 2:
            saga.cut(order, 3)
            saga.stuck(order, "shipping", T0 + (i + 5) * MINUTE)
        mine.append(order)
    saga.order("success", bo, [(sku, 1, 10)], at=T0 + 30 * MINUTE)
    published = await publish_saga(query_env, saga)
    await query_env.caught_up(published)

    async def pages(**params) -> tuple[list[str], int]:
        seen: list[str] = []
        cursor, count = None, 0
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = await query_env.get("/orders", **query)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [o["order_id"] for o in body["items"]]
            count += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return seen, count

    ids = [o.order_id for o in mine]
    assert await pages(customer_id=ada, limit=3, newest_first="true") == (ids[::-1], 3)
    assert await pages(customer_id=ada, limit=3) == (ids, 3)
    stuck = ids[1::2]
    assert await pages(stuck="true", limit=2, newest_first="true") == (stuck[::-1], 2)
    assert await pages(stuck="true", limit=2) == (stuck, 2)
    assert await pages(stuck="true", status="PENDING", customer_id=ada) == (stuck, 1)
    assert await pages(stuck="true", status="COMPLETED") == ([], 1)
    assert await pages(stuck="true", customer_id=bo) == ([], 1)
    newest = (await query_env.get("/orders", limit=1, newest_first="true")).json()["items"]
    assert newest[0]["customer_id"] == bo

    # A cursor goes with the direction it was made for.
    first = (await query_env.get("/orders", limit=2, newest_first="true")).json()
    r = await query_env.get("/orders", cursor=first["next_cursor"])
    assert r.status_code == 422 and "newest_first" in r.text
    plain = (await query_env.get("/orders", limit=2)).json()
    r = await query_env.get("/orders", cursor=plain["next_cursor"], newest_first="true")
    assert r.status_code == 422
    for bad in ({"stuck": "maybe"}, {"newest_first": "sideways"}, {"stuck": ""}):
        r = await query_env.get("/orders", **bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/json"


async def test_stats_before_any_order_has_every_status(query_env: QueryEnv):
    r = await query_env.get("/stats")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "by_status": {"PENDING": 0, "COMPLETED": 0, "REJECTED": 0, "CANCELLED": 0},
        "stuck": 0,
        "total": 0,
    }
    spec = (await query_env.http.get("/openapi.json")).json()
    assert "/api/v1/stats" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/api/v1/orders"]["get"]["parameters"]}
    assert {"stuck", "newest_first", "cursor", "status", "customer_id"} <= params
