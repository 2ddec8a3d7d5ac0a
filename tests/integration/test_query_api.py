"""The query API over a projection fed by real saga events on the real broker."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from events.envelope import Envelope
from tests.integration.test_query_kit import (
    OUTCOMES,
    PATHS,
    T0,
    QueryEnv,
    Saga,
    min_position,
    publish_saga,
    query_env,
)

pytestmark = pytest.mark.integration
__all__ = ["query_env"]  # the fixture, imported for pytest


async def test_order_views_follow_every_saga_path(query_env: QueryEnv):
    saga = Saga()
    cust = saga.customer("ada")
    plans = {path: saga.order(path, cust, [(saga.sku("w"), 2, 150)]) for path in PATHS}
    published = await publish_saga(query_env, saga)
    for path, plan in plans.items():
        r = await query_env.get(f"/orders/{plan.order_id}", min_position=min_position(published))
        assert r.status_code == 200, r.text
        view = r.json()
        status, failed_step, payment, shipment, stock = OUTCOMES[path]
        assert (view["status"], view["failed_step"]) == (status, failed_step), path
        assert (view["payment_status"], view["shipment_status"]) == (payment, shipment), path
        assert view["stock_status"] == stock, path
        assert view["customer_id"] == cust and view["total_cents"] == 300
        assert view["lines"] == [{"sku": saga.sku("w"), "quantity": 2, "unit_price_cents": 150}]
        assert view["created_at"].startswith("2025-03-01T12:00:00")
        assert (view["terminal_at"] is None) == (status == "PENDING")
        assert view["notified_at"] is not None
        if path == "success":
            assert view["payment_id"] and view["shipment_id"] and view["carrier"] == "DHL"
            assert view["reason"] is None
        if path in ("insufficient funds", "unserviceable address", "out of stock"):
            assert view["reason"]
        assert view["updated_at"] >= view["created_at"]


async def test_pending_order_and_a_late_creation_event(query_env: QueryEnv):
    """Facts from other topics may arrive before OrderCreated: the order stays unlisted (404)
    until it is created, then shows everything seen so far."""
    saga = Saga()
    plan = saga.order("success", saga.customer("bo"), [(saga.sku("w"), 1, 100)])
    created, rest = plan.events[0], plan.events[1:]
    later = await publish_saga(query_env, saga, rest[:2])  # StockReserved, PaymentCaptured
    r = await query_env.get(f"/orders/{plan.order_id}", min_position=min_position(later))
    assert r.status_code == 404
    first = await publish_saga(query_env, saga, [created])
    r = await query_env.get(f"/orders/{plan.order_id}", min_position=min_position(first))
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "PENDING" and view["terminal_at"] is None
    assert view["payment_status"] == "CAPTURED" and view["stock_status"] == "RESERVED"


async def test_list_orders_pages_by_cursor_with_filters(query_env: QueryEnv):
    saga = Saga()
    ada, bo = saga.customer("ada"), saga.customer("bo")
    sku = saga.sku("w")
    mine = [
        saga.order(
            "success" if i % 2 else "cancelled", ada, [(sku, 1, 10)], at=T0 + timedelta(minutes=i)
        )
        for i in range(7)
    ]
    saga.order("success", bo, [(sku, 1, 10)])
    published = await publish_saga(query_env, saga)
    await query_env.caught_up(published)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"customer_id": ada, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await query_env.get("/orders", **params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [o["order_id"] for o in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == [o.order_id for o in mine]  # created_at order

    r = await query_env.get("/orders", customer_id=ada, status="COMPLETED", limit=500)
    assert [o["order_id"] for o in r.json()["items"]] == [o.order_id for o in mine[1::2]]
    r = await query_env.get("/orders", customer_id=ada, status="PENDING")
    assert r.json() == {"items": [], "next_cursor": None}
    r = await query_env.get("/orders", customer_id=bo)
    assert len(r.json()["items"]) == 1

    for bad in ("!!!", "bm90IGpzb24", "WyJ4IiwieSJd", "W10", "x" * 600):
        r = await query_env.get("/orders", cursor=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/json"


async def test_timeline_is_causal_whatever_the_clocks_say(query_env: QueryEnv):
    saga = Saga()
    plan = saga.order("unserviceable address", saga.customer("cy"), [(saga.sku("w"), 1, 100)])
    # Skew the clocks: inventory's StockReserved claims to be a minute before OrderCreated.
    reserved = plan.events[1]
    reserved.draft = dataclasses.replace(reserved.draft, occurred_at=T0 - timedelta(minutes=1))
    published = await publish_saga(query_env, saga)
    r = await query_env.get(
        f"/orders/{plan.order_id}/timeline", min_position=min_position(published)
    )
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert len(events) == len(plan.events)
    position = {e["event_id"]: i for i, e in enumerate(events)}
    for e in events:
        if e["causation_id"] in position:
            assert position[e["causation_id"]] < position[e["event_id"]], e
    assert events[0]["event_type"] == "OrderCreated" and events[1]["event_type"] == "StockReserved"
    by_id = {p.event_id: p for p in published}
    for e in events:
        p = by_id[e["event_id"]]
        assert (e["topic"], e["partition"], e["offset"]) == (p.topic, p.partition, p.offset)
        assert e["correlation_id"] == plan.events[0].event_id
        # A trace id only when the publisher traced (a tracer provider is installed).
        assert e["trace_id"] is None or re.fullmatch(r"[0-9a-f]{32}", e["trace_id"])
    services = {e["event_type"]: e["service"] for e in events}
    assert services["PaymentRefunded"] == "payments" and services["ShipmentFailed"] == "shipping"


async def test_timeline_shows_the_trace_id_of_the_traceparent_header(query_env: QueryEnv):
    order_id = str(uuid.uuid4())
    trace = uuid.uuid4().hex
    payload = {
        "order_id": order_id,
        "customer_id": "c",
        "reason": "r",
        "failed_at": T0,
    }
    topic = query_env.prefix + "shipping.events"
    env = Envelope(
        event_id=str(uuid.uuid4()),
        event_type="ShipmentFailed",
        schema_version=1,
        occurred_at=T0,
        producer="shipping",
        correlation_id=str(uuid.uuid4()),
        key=order_id,
        traceparent=f"00-{trace}-{'ab' * 8}-01",
    )
    producer = AIOKafkaProducer(bootstrap_servers=query_env.bootstrap)
    await producer.start()
    try:
        md = await producer.send_and_wait(
            topic,
            query_env.codec.encode("ShipmentFailed", payload),
            key=order_id.encode(),
            headers=env.to_headers(),
        )
    finally:
        await producer.stop()
    r = await query_env.get(
        f"/orders/{order_id}/timeline", min_position=f"{md.topic}:{md.partition}:{md.offset}"
    )
    assert r.status_code == 200, r.text
    (event,) = r.json()["events"]
    assert event["trace_id"] == trace and event["service"] == "shipping"


async def test_customer_view_counts_money_once(query_env: QueryEnv):
    saga = Saga()
    ada = saga.customer("ada")
    sku = saga.sku("w")
    deposit = saga.deposit(ada, 10_000)
    saga.deposit(ada, 10_000, deposit_id=deposit.draft.payload["deposit_id"])  # re-sent
    saga.deposit(ada, 500, at=T0 + timedelta(hours=1))
    saga.order("success", ada, [(sku, 2, 1000)])  # captures 2000
    saga.order("unserviceable address", ada, [(sku, 1, 300)])  # captures, refunds 300
    declined = saga.order("insufficient funds", ada, [(sku, 1, 99_999)])
    saga.order("out of stock", ada, [(sku, 1, 5)])
    published = await publish_saga(query_env, saga)
    r = await query_env.get(f"/customers/{ada}", min_position=min_position(published))
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["orders_count"] == 4
    assert (c["deposited_cents"], c["captured_cents"], c["refunded_cents"]) == (10_500, 2300, 300)
    assert c["balance_cents"] == 10_500 - 2300 + 300
    assert c["balance_as_of"].startswith("2025-03-01T13:00:00")  # the later deposit
    assert c["last_decline"]["balance_cents"] == 7
    assert c["last_decline"]["event_id"] == declined.events[2].event_id

    # The same events again (a relay re-publishing after a crash) change nothing.
    again = await publish_saga(query_env, saga)
    r = await query_env.get(f"/customers/{ada}", min_position=min_position(again))
    assert r.json() == c


async def test_sku_view_mirrors_inventory(query_env: QueryEnv):
    saga = Saga()
    sku, other = saga.sku("w"), saga.sku("v")
    first = saga.restock(sku, 10)
    saga.restock(sku, 10, restock_id=first.draft.payload["restock_id"])  # the same restock
    saga.restock(sku, 5)
    saga.restock(other, 1)
    cust = saga.customer("ada")
    saga.order("success", cust, [(sku, 3, 1), (other, 1, 1)])  # shipped
    saga.order("insufficient funds", cust, [(sku, 2, 1)])  # reserved, released
    saga.order("out of stock", cust, [(sku, 99, 1)])  # nothing moves
    held = saga.order("success", cust, [(sku, 4, 1)])
    del held.events[4:]  # reserved and captured, not completed yet
    saga.sent = [s for s in saga.sent if s in held.events or s.draft.key != held.order_id]
    published = await publish_saga(query_env, saga)
    r = await query_env.get(f"/skus/{sku}", min_position=min_position(published))
    assert r.status_code == 200, r.text
    assert r.json() == {"sku": sku, "received": 15, "reserved": 4, "shipped": 3, "on_hand": 8}
    r = await query_env.get(f"/skus/{other}")
    assert r.json() == {"sku": other, "received": 1, "reserved": 0, "shipped": 1, "on_hand": 0}


async def test_unknown_ids_are_404_and_bad_parameters_422(query_env: QueryEnv):
    missing = str(uuid.uuid4())
    for path in (
        f"/orders/{missing}",
        f"/orders/{missing}/timeline",
        "/customers/nobody",
        "/skus/nothing",
        "/no-such-route",
    ):
        r = await query_env.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/json" and "detail" in r.json()
    for path, params in (
        ("/orders/not-a-uuid", {}),
        ("/orders/not-a-uuid/timeline", {}),
        ("/orders", {"status": "LOST"}),
        ("/orders", {"limit": 0}),
        ("/orders", {"limit": 501}),
        ("/orders", {"limit": "ten"}),
        ("/orders", {"customer_id": ""}),
        (f"/customers/{'x' * 300}", {}),
        ("/projections", {"min_position": "nope"}),
        ("/projections", {"min_position": "a:b:c"}),
        ("/projections", {"min_position": "unknown-topic:0:1"}),
        ("/projections", {"min_position": f"{query_env.prefix}orders.events:99:1"}),
        ("/projections", {"wait_ms": 10_001}),
        ("/projections", {"wait_ms": -1}),
    ):
        r = await query_env.get(path, **params)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"] == "application/json" and "detail" in r.json()


async def test_read_your_writes(query_env: QueryEnv):
    saga = Saga()
    plan = saga.order("success", saga.customer("dee"), [(saga.sku("w"), 1, 100)])
    published = await publish_saga(query_env, saga)
    # No waiting on our side: the read itself waits until the projection has applied them.
    for position in (min_position(published), *(min_position([p]) for p in published)):
        r = await query_env.get(f"/orders/{plan.order_id}", min_position=position)
        assert r.status_code == 200
    repeated = [("min_position", min_position([p])) for p in published]
    r = await query_env.http.get(f"/api/v1/orders/{plan.order_id}", params=repeated)
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED"

    far = published[0]
    ahead = f"{far.topic}:{far.partition}:{far.offset + 1000}"
    r = await query_env.get(f"/orders/{plan.order_id}", min_position=ahead, wait_ms=200)
    assert r.status_code == 504
    body = r.json()["detail"]
    assert "not applied" in body["message"] and f"{far.topic}:{far.partition}" in body["behind"]


async def test_projections_state_and_readiness(query_env: QueryEnv):
    saga = Saga()
    saga.order("success", saga.customer("eve"), [(saga.sku("w"), 1, 100)])
    published = await publish_saga(query_env, saga)
    r = await query_env.get("/projections", min_position=min_position(published))
    assert r.status_code == 200
    (state,) = r.json()
    assert state["name"] == "query" and state["active_generation"] == 1
    assert state["building_generation"] is None and state["started"]
    assert state["applied"] >= len(published) and state["undecodable"] == 0
    assert len(state["partitions"]) == 5 * 3  # the five *.events topics (owners' facts only)
    for p in published:
        part = next(
            x for x in state["partitions"] if (x["topic"], x["partition"]) == (p.topic, p.partition)
        )
        assert part["position"] > p.offset
    ready = await query_env.http.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["caught_up"]
    assert (await query_env.http.get("/health")).json()["status"] == "ok"
    spec = (await query_env.http.get("/openapi.json")).json()
    for path in (
        "/api/v1/orders/{order_id}",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}/timeline",
        "/api/v1/customers/{customer_id}",
        "/api/v1/skus/{sku}",
        "/api/v1/projections",
    ):
        assert path in spec["paths"]


async def test_a_server_fault_is_a_json_500_without_details(query_env: QueryEnv, monkeypatch):
    async def broken(order_id: str):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(query_env.side.reads, "order", broken)
    r = await query_env.get(f"/orders/{uuid.uuid4()}")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error"}
