"""Bounded HTTP input (issue 17): a body over HTTP_MAX_BODY_BYTES is a 413 before it is
parsed (chunked too), a Host outside ALLOWED_HOSTS a 400, requests beyond
HTTP_MAX_CONCURRENT a 503 with Retry-After (probes exempt), too many ``min_position``
items a 422 naming it, and an order id used again with another payload a 409. Every refusal
answers JSON and writes nothing.

Services run in process over their own database (SQLite, or PostgreSQL with
CHOREO_TEST_DB=postgres); one test serves through uvicorn to cover its chunked bodies.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import MetaData, func, select

from events.envelope import utcnow
from events.http_input import MAX_BODY_BYTES
from events.service import Service, ServiceContext, ServiceSettings, build_app, http_server
from events.tables import outbox
from infra.broker import free_port
from schemas.models import SkuPriced
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as orders_service
from services.orders.tables import orders
from services.query.params import MAX_POSITIONS
from tests.integration.service_kit import deliver, http_client, open_service, service_fixture
from tests.integration.test_query_kit import QueryEnv, query_env
from tests.support import eventually

__all__ = ["query_env"]  # the fixture, imported for pytest

orders_ctx = service_fixture(orders_service, OrdersSettings, name="orders_ctx")

ADDRESS = {"name": "n", "line1": "l", "city": "c", "postal_code": "10115", "country": "DE"}


def an_order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": str(uuid.uuid4()),
        "customer_id": "c1",
        "lines": [{"sku": "s1", "quantity": 2, "unit_price_cents": 100}],
        "shipping_address": ADDRESS,
    }
    return body | changes


async def priced(ctx: ServiceContext, *skus: str) -> None:
    """Orders learns inventory's price of each SKU (100 cents), as ``an_order`` sends it."""
    for sku in skus:
        fact = SkuPriced(
            sku=sku, unit_price_cents=100, restock_id=str(uuid.uuid4()), priced_at=utcnow()
        )
        await deliver(ctx, fact)


async def stored(ctx: ServiceContext) -> tuple[int, int]:
    """(orders, outbox rows) in the service's database."""
    async with ctx.db.session() as s:
        n_orders = (await s.execute(select(func.count()).select_from(orders))).scalar_one()
        n_rows = (await s.execute(select(func.count()).select_from(outbox))).scalar_one()
    return int(n_orders), int(n_rows)


def padded(size: int) -> bytes:
    """A valid order's JSON grown to exactly ``size`` bytes (a long customer id would be a
    422, so the padding is JSON whitespace)."""
    raw = json.dumps(an_order()).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def is_json(answer: httpx.Response) -> bool:
    return answer.headers["content-type"].startswith("application/json")


# --- body size --------------------------------------------------------------------------------


async def test_a_body_over_the_default_limit_is_a_413_and_one_at_it_is_read(
    orders_ctx: ServiceContext,
) -> None:
    assert orders_ctx.settings.http_max_body_bytes == MAX_BODY_BYTES == 64 * 1024
    json_type = {"content-type": "application/json"}

    async def chunks(raw: bytes) -> AsyncIterator[bytes]:  # no Content-Length
        for start in range(0, len(raw), 4096):
            yield raw[start : start + 4096]

    await priced(orders_ctx, "s1")
    async with http_client(orders_ctx) as http:
        over = padded(MAX_BODY_BYTES + 1)
        sized = await http.post("/api/v1/orders", content=over, headers=json_type)
        chunked = await http.post("/api/v1/orders", content=chunks(over), headers=json_type)
        for answer in (sized, chunked):
            assert answer.status_code == 413, answer.text
            assert is_json(answer)
            assert f"larger than {MAX_BODY_BYTES} bytes" in answer.json()["detail"]
        assert await stored(orders_ctx) == (0, 0)
        at_limit = padded(MAX_BODY_BYTES)
        answer = await http.post("/api/v1/orders", content=chunks(at_limit), headers=json_type)
    assert answer.status_code == 201, answer.text
    assert await stored(orders_ctx) == (1, 1)


async def test_the_body_limit_is_a_setting(tmp_path: Path) -> None:
    async with (
        open_service(orders_service, OrdersSettings, tmp_path, http_max_body_bytes=2048) as ctx,
        http_client(ctx) as http,
    ):
        await priced(ctx, "s1")
        json_type = {"content-type": "application/json"}
        answer = await http.post("/api/v1/orders", content=padded(2049), headers=json_type)
        assert answer.status_code == 413, answer.text
        assert "larger than 2048 bytes" in answer.json()["detail"]
        answer = await http.post("/api/v1/orders", content=padded(2048), headers=json_type)
        assert answer.status_code == 201, answer.text


async def test_uvicorn_refuses_a_chunked_body_and_a_wrong_host(orders_ctx: ServiceContext) -> None:
    # Served for real: the chunks arrive as uvicorn parses them off the socket.
    port = free_port()
    settings = orders_ctx.settings.model_copy(update={"http_port": port})
    server = http_server(build_app(orders_ctx.extras["service"], orders_ctx), settings)
    serving = asyncio.create_task(server.serve())
    over = padded(MAX_BODY_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over), 8192):
            yield over[start : start + 8192]

    try:
        await eventually(lambda: server.started, what="uvicorn to serve")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            answer = await http.post(
                "/api/v1/orders", content=chunks(), headers={"content-type": "application/json"}
            )
            assert answer.status_code == 413, answer.text
            assert is_json(answer)
            wrong = await http.get("/health", headers={"host": f"choreo.example:{port}"})
            assert wrong.status_code == 400, wrong.text
            assert "choreo.example" in wrong.json()["detail"]
            assert (await http.get("/health")).status_code == 200
    finally:
        server.should_exit = True
        await serving
    assert await stored(orders_ctx) == (0, 0)


# --- Host -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["choreo.example", "127.0.0.2:8101", "evil.localhost", "[::2]"])
async def test_a_host_not_allowed_is_a_400_json_on_every_path(
    orders_ctx: ServiceContext, host: str
) -> None:
    async with http_client(orders_ctx) as http:
        for method, path in [
            ("GET", "/health"),
            ("GET", "/api/v1/orders"),
            ("POST", "/api/v1/orders"),
        ]:
            answer = await http.request(
                method, path, headers={"host": host}, json=an_order() if method == "POST" else None
            )
            assert answer.status_code == 400, f"{method} {path}: {answer.text}"
            assert is_json(answer), answer.headers
            assert "ALLOWED_HOSTS" in answer.json()["detail"]
    assert await stored(orders_ctx) == (0, 0)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8101", "LOCALHOST:80", "[::1]:8101"])
async def test_the_default_hosts_are_served(orders_ctx: ServiceContext, host: str) -> None:
    async with http_client(orders_ctx) as http:
        answer = await http.get("/health", headers={"host": host})
    assert answer.status_code == 200, answer.text


async def test_allowed_hosts_is_a_setting_with_subdomain_patterns(tmp_path: Path) -> None:
    hosts = "orders.internal, *.example.com"
    async with (
        open_service(orders_service, OrdersSettings, tmp_path, allowed_hosts=hosts) as ctx,
        http_client(ctx) as http,
    ):
        for host, status in [
            ("orders.internal:8101", 200),
            ("api.example.com", 200),
            ("example.org", 400),
            ("localhost", 400),  # not in the list any more
        ]:
            answer = await http.get("/health", headers={"host": host})
            assert answer.status_code == status, f"{host}: {answer.text}"


@pytest.mark.parametrize("value", ["", " , ", "a.*.com", "*example.com", "exa*mple.com"])
def test_a_bad_allowed_hosts_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValidationError, match="allowed_hosts"):
        ServiceSettings(allowed_hosts=value)


# --- requests in progress -------------------------------------------------------------------


class Gate:
    """A route that holds each request until the test opens it, counting who waits."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    def install(self, app: FastAPI, _: ServiceContext) -> None:
        @app.get("/slow")
        async def slow() -> dict[str, bool]:
            self.waiting += 1
            await self.open.wait()
            self.waiting -= 1
            return {"done": True}


async def test_requests_beyond_the_cap_are_503_with_retry_after(tmp_path: Path) -> None:
    gate = Gate()
    service = Service(name="capped", metadata=MetaData(), relay=False, http=gate.install)
    async with (
        open_service(service, ServiceSettings, tmp_path, http_max_concurrent=2) as ctx,
        http_client(ctx) as http,
    ):
        held = [asyncio.create_task(http.get("/slow")) for _ in range(2)]
        await eventually(lambda: gate.waiting == 2, what="two requests in progress")
        refused = await http.get("/slow")
        assert refused.status_code == 503, refused.text
        assert is_json(refused) and "2 requests in progress" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        assert (await http.get("/health")).status_code == 200  # probes exempt
        assert (await http.get("/ready")).status_code == 200
        assert not any(task.done() for task in held)  # the refusal did not wait for them
        gate.open.set()
        assert [(await task).status_code for task in held] == [200, 200]
        assert (await http.get("/slow")).status_code == 200  # the slots were given back


async def test_a_failing_request_gives_its_slot_back(tmp_path: Path) -> None:
    def install(app: FastAPI, _: ServiceContext) -> None:
        @app.get("/fail")
        async def fail() -> None:
            raise RuntimeError("a fault of the service")

    service = Service(name="capped", metadata=MetaData(), relay=False, http=install)
    async with open_service(service, ServiceSettings, tmp_path, http_max_concurrent=1) as ctx:
        # The fault is a 500 answer here, not an exception raised into the test.
        transport = httpx.ASGITransport(app=build_app(service, ctx), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            for _ in range(3):
                assert (await http.get("/fail")).status_code == 500
            assert (await http.get("/api/v1/nothing")).status_code == 404  # not 503


# --- list sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["repeated", "comma-separated", "one long value"])
async def test_too_many_min_positions_are_a_422_naming_it(query_env: QueryEnv, style: str) -> None:
    items = [f"orders.events:{i}:1" for i in range(MAX_POSITIONS + 1)]
    params: list[tuple[str, str]] = {
        "repeated": [("min_position", i) for i in items],
        "comma-separated": [("min_position", ",".join(items))],
        "one long value": [("min_position", "x" * MAX_POSITIONS * 300)],
    }[style]
    answer = await query_env.http.get("/api/v1/orders", params=params)
    assert answer.status_code == 422, answer.text
    assert is_json(answer)
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", "min_position"]
    assert str(MAX_POSITIONS) in error["msg"]


# --- a repeated order id --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"customer_id": "c2"},
        {"lines": [{"sku": "s1", "quantity": 3, "unit_price_cents": 100}]},
        {"lines": [{"sku": "s2", "quantity": 2, "unit_price_cents": 100}]},
        {"lines": [{"sku": "s1", "quantity": 2, "unit_price_cents": 100}] * 2},
        {"shipping_address": ADDRESS | {"city": "elsewhere"}},
    ],
    ids=["customer", "quantity", "sku", "lines", "address"],
)
async def test_an_order_id_again_with_another_payload_is_a_409(
    orders_ctx: ServiceContext, change: dict[str, Any]
) -> None:
    first = an_order()
    await priced(orders_ctx, "s1", "s2")
    async with http_client(orders_ctx) as http:
        placed = await http.post("/api/v1/orders", json=first)
        assert placed.status_code == 201, placed.text
        again = await http.post("/api/v1/orders", json=first)  # a retry: idempotent
        assert again.status_code == 200, again.text
        assert again.json() == placed.json()
        unpriced = first | {"lines": [{"sku": "s1", "quantity": 2}]}  # the price it has
        assert (await http.post("/api/v1/orders", json=unpriced)).status_code == 200
        other = await http.post("/api/v1/orders", json=first | change)
        assert other.status_code == 409, other.text
        assert is_json(other) and first["order_id"] in other.json()["detail"]
        kept = await http.get(f"/api/v1/orders/{first['order_id']}")
    assert kept.json() == placed.json()  # the stored order is unchanged
    assert await stored(orders_ctx) == (1, 1)  # one order, one OrderCreated


async def test_the_same_new_order_sent_at_once_is_created_once(orders_ctx: ServiceContext) -> None:
    # A client that retries before its first request was answered: on PostgreSQL both may
    # find no order and insert; the loser is a retry (200), not a fault.
    first = an_order()
    await priced(orders_ctx, "s1")
    async with http_client(orders_ctx) as http:
        answers = await asyncio.gather(*(http.post("/api/v1/orders", json=first) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert await stored(orders_ctx) == (1, 1)
