"""End to end: the query service beside the five saga services agrees with each of them,
and a replay from the command line, while everything runs, changes no answer."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from events.kafka import KafkaConnection
from events.settings import REPO_ROOT
from services.saga_check import World, statuses
from services.tools.demo import drive
from tests.e2e.conftest import Stack
from tests.e2e.test_saga import settle
from tests.support import eventually
from tests.tokens import operator_headers

pytestmark = pytest.mark.e2e


@pytest.fixture
async def query(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's query service."""
    base = f"http://127.0.0.1:{stack.spec('query').port}/api/v1"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=operator_headers()) as http:
        yield http


async def disagreements(world: World, stack: Stack, query: httpx.AsyncClient) -> list[str]:
    """Where the read side differs from the service that owns the data."""
    out: list[str] = []
    orders = await statuses(world, stack.api)
    for oid, row in orders.items():
        r = await query.get(f"/orders/{oid}")
        view = r.json() if r.status_code == 200 else {}
        for key in ("status", "failed_step", "reason", "total_cents", "customer_id"):
            if view.get(key) != row[key]:
                out.append(f"order {oid} {key}: query {view.get(key)!r}, orders {row[key]!r}")
    for sku in world.stock:
        owned = await stack.api.get("inventory", f"/stock/{sku}")
        r = await query.get(f"/skus/{sku}")
        view = r.json() if r.status_code == 200 else {}
        for key in ("on_hand", "reserved", "shipped", "received"):
            if owned is None or view.get(key) != owned[key]:
                out.append(f"sku {sku} {key}: query {view.get(key)}, inventory {owned}")
    for cust in world.deposits:
        account = await stack.api.get("payments", f"/accounts/{cust}")
        r = await query.get(f"/customers/{cust}")
        view = r.json() if r.status_code == 200 else {}
        for key in ("balance_cents", "deposited_cents", "captured_cents", "refunded_cents"):
            if account is None or view.get(key) != account[key]:
                out.append(f"customer {cust} {key}: query {view.get(key)}, payments {account}")
    return out


async def agree(world: World, stack: Stack, query: httpx.AsyncClient) -> None:
    problems: list[str] = []

    async def none_left() -> bool:
        problems[:] = await disagreements(world, stack, query)
        return not problems

    try:
        await eventually(none_left, deadline_s=60, poll_s=0.5, what="the read side to agree")
    except AssertionError:
        pytest.fail("the read side disagrees:\n" + "\n".join(problems[:30]))


async def test_the_read_side_agrees_with_every_service_and_survives_a_replay(
    stack: Stack, query: httpx.AsyncClient
):
    world = World()
    await drive(world, stack.codec, KafkaConnection(stack.bootstrap), stack.api, per_path=2)
    rows = await settle(world, stack)
    await agree(world, stack, query)

    completed = next(oid for oid, r in rows.items() if r["status"] == "COMPLETED")
    timeline = (await query.get(f"/orders/{completed}/timeline")).json()["events"]
    kinds = [e["event_type"] for e in timeline]
    for kind in ("OrderCreated", "StockReserved", "PaymentCaptured", "ShipmentScheduled"):
        assert kind in kinds
    assert kinds[0] == "OrderCreated" and "OrderCompleted" in kinds
    assert (
        kinds.index("StockReserved")
        < kinds.index("PaymentCaptured")
        < kinds.index("ShipmentScheduled")
        < kinds.index("OrderCompleted")
    )
    services = {e["event_type"]: e["service"] for e in timeline}
    assert services["StockReserved"] == "inventory" and services["PaymentCaptured"] == "payments"
    assert len({e["correlation_id"] for e in timeline}) == 1

    child = {**os.environ, **stack.env, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    # The replay works on the query service's own database.
    child.update(VAR_DIR=str(stack.var_dir), DATABASE_URL=stack.env.get("QUERY_DATABASE_URL", ""))
    replayed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.query.replay",
        "query",
        env=child,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(replayed.communicate(), 180)
    assert replayed.returncode == 0, err.decode()
    assert b"now serving it" in out

    async def switched() -> bool:
        (state,) = (await query.get("/projections")).json()
        return state["active_generation"] == 2 and state["following_generation"] == 2

    await eventually(switched, deadline_s=30, what="the service to serve the rebuilt generation")
    await agree(world, stack, query)
    assert (await query.get(f"/orders/{completed}/timeline")).json()["events"] == timeline
