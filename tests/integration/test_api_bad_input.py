"""No client input makes a service's HTTP API answer 5xx (issue 14, defect 4): non-finite
numbers, numbers beyond 64 bits, totals that would overflow, lone UTF-16 surrogates, NUL
characters and huge bodies are 4xx with a JSON body naming the field, and nothing of a
refused request reaches the database or the outbox.

Each service runs in process over its own database (SQLite, or PostgreSQL with
CHOREO_TEST_DB=postgres: NUL in a parameter is the PostgreSQL case).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from events.service import ServiceContext
from events.tables import outbox
from schemas.models import MAX_ID_LENGTH, MAX_LINES, MAX_QUANTITY, MAX_UNIT_PRICE_CENTS
from services.inventory.app import SERVICE as INVENTORY
from services.inventory.app import Settings as InventorySettings
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as orders_service
from services.orders.tables import orders
from services.payments.app import SERVICE as PAYMENTS
from services.payments.app import Settings as PaymentsSettings
from services.query.params import encode_cursor
from tests.integration.service_kit import http_client, service_fixture, set_prices
from tests.integration.test_query_kit import QueryEnv, query_env

__all__ = ["query_env"]  # the fixture, imported for pytest

orders_ctx = service_fixture(orders_service, OrdersSettings, name="orders_ctx")
inventory_ctx = service_fixture(INVENTORY, InventorySettings, name="inventory_ctx")
payments_ctx = service_fixture(PAYMENTS, PaymentsSettings, name="payments_ctx")

ADDRESS = '{"name":"n","line1":"l","city":"c","postal_code":"10115","country":"DE"}'
LINE = '{"sku":"s","quantity":1,"unit_price_cents":100}'


def order_body(
    customer: str = '"c"', line: str = LINE, address: str = ADDRESS, lines: str | None = None
) -> str:
    """A POST /orders body as raw JSON text (NaN and lone surrogates are only expressible
    so), with one part replaced."""
    return (
        f'{{"customer_id":{customer},"lines":{lines or f"[{line}]"},"shipping_address":{address}}}'
    )


def line(quantity: str = "1", price: str = "100", sku: str = '"s"') -> str:
    return f'{{"sku":{sku},"quantity":{quantity},"unit_price_cents":{price}}}'


def address(field: str, value: str) -> str:
    parts = json.loads(ADDRESS)
    body = ",".join(f'"{k}":{value if k == field else json.dumps(v)}' for k, v in parts.items())
    return f"{{{body}}}"


BIG = MAX_QUANTITY, MAX_UNIT_PRICE_CENTS
BAD_ORDERS: dict[str, tuple[str, str]] = {
    # name: (raw JSON body, a field the answer must name)
    "NaN quantity": (order_body(line=line(quantity="NaN")), "quantity"),
    "Infinity price": (order_body(line=line(price="Infinity")), "unit_price_cents"),
    "-Infinity price": (order_body(line=line(price="-Infinity")), "unit_price_cents"),
    "quantity 1e400": (order_body(line=line(quantity="1e400")), "quantity"),
    "NaN as a string": (order_body(line=line(quantity='"NaN"')), "quantity"),
    "price beyond 64 bits": (order_body(line=line(price=str(2**80))), "unit_price_cents"),
    "total beyond 64 bits": (
        order_body(line=line(quantity=str(2**31 - 1), price=str(2**63 - 1))),
        "quantity",
    ),
    "price past its maximum": (
        order_body(line=line(quantity=str(BIG[0]), price=str(BIG[1] + 1))),
        "unit_price_cents",
    ),
    "too many lines": (order_body(lines="[" + ",".join([LINE] * (MAX_LINES + 1)) + "]"), "lines"),
    "surrogate customer": (order_body(customer='"\\ud800"'), "customer_id"),
    "surrogate sku": (order_body(line=line(sku='"a\\udfffb"')), "sku"),
    "surrogate postal code": (
        order_body(address=address("postal_code", '"\\ud800"')),
        "postal_code",
    ),
    "surrogate city": (order_body(address=address("city", '"\\udc00"')), "city"),
    "NUL in a name": (order_body(address=address("name", '"a\\u0000b"')), "name"),
    "NUL in a customer id": (order_body(customer='"\\u0000"'), "customer_id"),
    "long sku": (order_body(line=line(sku=json.dumps("x" * (MAX_ID_LENGTH + 1)))), "sku"),
    "long customer": (order_body(customer=json.dumps("x" * (MAX_ID_LENGTH + 1))), "customer_id"),
    "long city": (order_body(address=address("city", json.dumps("x" * 10_000))), "city"),
}


def names(answer: httpx.Response, field: str) -> bool:
    body = answer.json()
    return any(field in map(str, error["loc"]) for error in body["detail"])


async def stored(ctx: ServiceContext) -> tuple[int, int]:
    async with ctx.db.session() as s:
        n_orders = (await s.execute(select(func.count()).select_from(orders))).scalar_one()
        n_rows = (await s.execute(select(func.count()).select_from(outbox))).scalar_one()
    return int(n_orders), int(n_rows)


async def post(http: httpx.AsyncClient, path: str, raw: str | bytes) -> httpx.Response:
    return await http.post(path, content=raw, headers={"content-type": "application/json"})


@pytest.mark.parametrize("case", sorted(BAD_ORDERS))
async def test_a_bad_order_is_a_422_naming_the_field_and_nothing_is_written(
    orders_ctx: ServiceContext, case: str
) -> None:
    raw, field = BAD_ORDERS[case]
    async with http_client(orders_ctx) as http:
        answer = await post(http, "/api/v1/orders", raw)
    assert answer.status_code == 422, answer.text
    assert names(answer, field), answer.text
    assert await stored(orders_ctx) == (0, 0)


async def test_the_largest_valid_order_is_accepted(orders_ctx: ServiceContext) -> None:
    # The bounds refuse nothing a valid order needs: a full order at every maximum.
    lines = [
        {
            "sku": f"{i:03d}" + "\u00e9" * (MAX_ID_LENGTH - 3),
            "quantity": BIG[0],
            "unit_price_cents": BIG[1],
        }
        for i in range(MAX_LINES)
    ]
    body = {
        "customer_id": "c" * MAX_ID_LENGTH,
        "lines": lines,
        "shipping_address": json.loads(ADDRESS),
    }
    await set_prices(orders_ctx, {line["sku"]: BIG[1] for line in lines})
    async with http_client(orders_ctx) as http:
        answer = await http.post("/api/v1/orders", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["total_cents"] == MAX_LINES * BIG[0] * BIG[1]
    assert await stored(orders_ctx) == (1, 1)


async def test_a_huge_body_is_a_413_before_it_is_parsed(orders_ctx: ServiceContext) -> None:
    huge = order_body(address=address("name", json.dumps("x" * 3_000_000)))
    async with http_client(orders_ctx) as http:
        answer = await post(http, "/api/v1/orders", huge)

        async def chunks() -> Any:  # no Content-Length: the limit counts what arrives
            for start in range(0, len(huge), 65536):
                yield huge[start : start + 65536].encode()

        chunked = await http.post(
            "/api/v1/orders", content=chunks(), headers={"content-type": "application/json"}
        )
    for each in (answer, chunked):
        assert each.status_code == 413, each.text
        assert "larger than" in each.json()["detail"]
    assert await stored(orders_ctx) == (0, 0)


@pytest.mark.parametrize(
    "raw", ['{"reason":"\\ud800"}', '{"reason":"a\\u0000"}', '{"reason":NaN}', '{"reason":1e999}']
)
async def test_a_bad_cancel_reason_is_a_422_and_the_order_stays_pending(
    orders_ctx: ServiceContext, raw: str
) -> None:
    await set_prices(orders_ctx, {"s": 100})  # LINE's SKU, at the price it sends
    async with http_client(orders_ctx) as http:
        placed = await post(http, "/api/v1/orders", order_body())
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]
        answer = await post(http, f"/api/v1/orders/{order_id}/cancel", raw)
        assert answer.status_code == 422, answer.text
        assert names(answer, "reason"), answer.text
        after = await http.get(f"/api/v1/orders/{order_id}")
    assert after.json()["status"] == "PENDING"
    assert await stored(orders_ctx) == (1, 1)  # only the OrderCreated of the order


NUL_AND_SURROGATE_PARAMS = ["%00", "a%00b", "%ED%A0%80", "%FF", "x" * 300]


@pytest.mark.parametrize("value", NUL_AND_SURROGATE_PARAMS)
async def test_bad_query_and_path_parameters_are_4xx_in_every_service(
    orders_ctx: ServiceContext,
    inventory_ctx: ServiceContext,
    payments_ctx: ServiceContext,
    value: str,
) -> None:
    gets = [
        (orders_ctx, f"/api/v1/orders?customer_id={value}"),
        (orders_ctx, f"/api/v1/orders/{value}"),
        (orders_ctx, f"/api/v1/orders?limit={value}"),
        (inventory_ctx, f"/api/v1/stock/{value}"),
        (inventory_ctx, f"/api/v1/reservations/{value}"),
        (payments_ctx, f"/api/v1/accounts/{value}"),
        (payments_ctx, f"/api/v1/payments/{value}"),
    ]
    for ctx, url in gets:
        async with http_client(ctx) as http:
            answer = await http.get(url)
        # 200 (an empty listing) or 404 where a value decodes to a plain unknown id.
        assert answer.status_code in (200, 404, 422), f"{url}: {answer.status_code} {answer.text}"
        assert answer.headers["content-type"].startswith("application/json"), url
        if "%00" in value or len(value) > 255:
            assert answer.status_code == 422, f"{url}: {answer.text}"


@pytest.mark.parametrize("value", NUL_AND_SURROGATE_PARAMS)
async def test_bad_query_parameters_are_4xx_on_the_read_side(
    query_env: QueryEnv, value: str
) -> None:
    for url in [
        f"/api/v1/orders?customer_id={value}",
        f"/api/v1/orders?cursor={value}",
        f"/api/v1/orders/{value}",
        f"/api/v1/orders/{value}/timeline",
        f"/api/v1/customers/{value}",
        f"/api/v1/skus/{value}",
        f"/api/v1/orders?min_position={value}",
        f"/api/v1/orders?wait_ms={value}",
    ]:
        answer = await query_env.http.get(url)
        assert answer.status_code in (200, 404, 422), f"{url}: {answer.status_code} {answer.text}"
        if "%00" in value and "wait_ms" not in url:
            assert answer.status_code == 422, f"{url}: {answer.text}"


async def test_a_cursor_hiding_a_nul_is_a_422_on_the_read_side(query_env: QueryEnv) -> None:
    cursor = encode_cursor("2026-01-01T00:00:00.000000+00:00", "a\x00b")
    answer = await query_env.http.get("/api/v1/orders", params={"cursor": cursor})
    assert answer.status_code == 422, answer.text
    assert names(answer, "cursor")
