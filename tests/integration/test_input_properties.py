"""Property-based runs over what clients send (issue 14): the orders API's write endpoints
(POST /api/v1/orders and .../cancel; the other services' HTTP APIs only read) and the CLI's
payloads, with strings, numbers and lists at and beyond their limits (lone surrogates, NUL,
NaN, Infinity, integers past 64 bits, 100 and 101 lines).

No request is a 5xx; every accepted one yields events that encode far under the broker's
message limit, down the saga's largest chain (OrderCreated -> inventory's StockRejected
naming every SKU -> OrderRejected -> CustomerNotified); every payload the CLI accepts is
one the consumers' models accept, and the rest are refused in one line.

Deterministic (derandomized) and short: the services run in process over their databases.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select

from events.catalogue import Catalogue
from events.cli.payloads import InputError
from events.cli.preparer import Preparer
from events.codec import AvroCodec
from events.envelope import utcnow
from events.service import ServiceContext
from events.tables import outbox
from schemas.models import (
    ALL_EVENTS,
    MAX_DEPOSIT_CENTS,
    MAX_ID_LENGTH,
    MAX_LINES,
    MAX_NAME_LENGTH,
    MAX_QUANTITY,
    MAX_REASON_LENGTH,
    MAX_UNIT_PRICE_CENTS,
    SkuPriced,
)
from services.inventory.app import SERVICE as INVENTORY
from services.inventory.app import Settings as InventorySettings
from services.notifications.app import SERVICE as NOTIFICATIONS
from services.notifications.app import Settings as NotificationsSettings
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as orders_service
from tests.integration.service_kit import deliver, http_client, service_fixture, set_prices
from tests.integration.test_cli_publish import Choreo, Env, all_end_offsets, choreo, env

__all__ = ["choreo", "env"]  # the fixtures, imported for pytest

LIMIT = 256 * 1024  # a quarter of Kafka's default max.message.bytes

orders_ctx = service_fixture(orders_service, OrdersSettings, name="orders_ctx")
inventory_ctx = service_fixture(INVENTORY, InventorySettings, name="inventory_ctx")
notifications_ctx = service_fixture(NOTIFICATIONS, NotificationsSettings, name="notes_ctx")

SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def around(limit: int) -> st.SearchStrategy[int]:
    return st.sampled_from([limit - 1, limit, limit + 1])


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\ud800", "a\udfffb", "\udc00\ud800", "\x00", "a\x00b", "\u2028"]),
    around(MAX_ID_LENGTH).map(lambda n: "\U0001d11e" * n),  # 4 UTF-8 bytes each
    around(MAX_NAME_LENGTH).map(lambda n: "\u00e9" * n),
    around(MAX_REASON_LENGTH).map(lambda n: "r" * n),
    st.just("x" * 300_000),
)
numbers = st.one_of(
    st.integers(-2, 10),
    around(MAX_QUANTITY),
    around(MAX_UNIT_PRICE_CENTS),
    around(MAX_DEPOSIT_CENTS),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**80, -(2**63) - 1]),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1.5, 1e300]),
    st.sampled_from(["1", "NaN", "Infinity", "", "1e400"]),
)
ids = st.one_of(st.sampled_from(["customer-1", "SKU-1"]), texts)

# Valid orders (small or at every maximum), then zero to two fields replaced by an edge value:
# wholly random bodies would almost never be valid, and the accepted ones matter most.
storable = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def valid_text(limit: int) -> st.SearchStrategy[str]:
    return st.one_of(st.text(storable, min_size=1, max_size=8), st.just("\U0001d11e" * limit))


def full_lines(sku: str) -> list[dict[str, Any]]:
    return [
        {
            "sku": f"{i:03d}{sku}"[:MAX_ID_LENGTH],
            "quantity": MAX_QUANTITY,
            "unit_price_cents": MAX_UNIT_PRICE_CENTS,
        }
        for i in range(MAX_LINES)
    ]


valid_line = st.fixed_dictionaries(
    {
        "sku": valid_text(MAX_ID_LENGTH),
        "quantity": st.sampled_from([1, 7, MAX_QUANTITY]),
        "unit_price_cents": st.sampled_from([0, 999, MAX_UNIT_PRICE_CENTS]),
    }
)
valid_orders = st.fixed_dictionaries(
    {
        "customer_id": valid_text(MAX_ID_LENGTH),
        "lines": st.one_of(
            st.lists(valid_line, min_size=1, max_size=3),
            valid_text(MAX_ID_LENGTH).map(full_lines),
        ),
        "shipping_address": st.fixed_dictionaries(
            {
                "name": valid_text(MAX_NAME_LENGTH),
                "line1": valid_text(MAX_NAME_LENGTH),
                "city": valid_text(MAX_NAME_LENGTH),
                "postal_code": st.sampled_from(["10115", "", "00000", "9" * 20]),
                "country": st.sampled_from(["DE", "FR", "US"]),
            }
        ),
    }
)
FIELDS = [
    ("customer_id",),
    ("order_id",),
    ("lines",),
    ("lines", 0, "sku"),
    ("lines", 0, "quantity"),
    ("lines", 0, "unit_price_cents"),
    ("lines", 0, "extra"),
    ("shipping_address", "name"),
    ("shipping_address", "line1"),
    ("shipping_address", "city"),
    ("shipping_address", "postal_code"),
    ("shipping_address", "country"),
]
edge_values = st.one_of(
    texts,
    numbers,
    st.none(),
    st.sampled_from(["DE\x00", "ZZ", "de"]),
    valid_line.map(lambda line: [line] * (MAX_LINES + 1)),
    st.just([]),
)


def edited(order: dict[str, Any], edits: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    out = json.loads(json.dumps(order))
    for path, value in edits:
        node: Any = out
        for part in path[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):  # an earlier edit replaced the parent
                node = None
        if isinstance(node, dict):
            node[path[-1]] = value
    return out


orders = st.builds(
    edited, valid_orders, st.lists(st.tuples(st.sampled_from(FIELDS), edge_values), max_size=2)
)


def raw(body: Any) -> str:
    # NaN and Infinity as JSON tokens, lone surrogates as \\u escapes: as a client sends them.
    return json.dumps(body, allow_nan=True)


async def outbox_rows(ctx: ServiceContext, key: str) -> list[tuple[str, bytes]]:
    async with ctx.db.session() as s:
        query = select(outbox.c.event_type, outbox.c.payload).where(outbox.c.key == key)
        rows = (await s.execute(query.order_by(outbox.c.id))).all()
    return [(str(t), bytes(p)) for t, p in rows]


async def follow(ctx: ServiceContext, key: str, event_type: str) -> Any:
    """The payload model of ``key``'s latest ``event_type`` in the service's outbox, each
    row checked to encode under the limit."""
    rows = await outbox_rows(ctx, key)
    for t, payload in rows:
        assert len(payload) < LIMIT, f"{t} of {key}: {len(payload)} bytes"
    payload = next(p for t, p in reversed(rows) if t == event_type)
    return ALL_EVENTS[event_type].model_validate(ctx.codec.decode(payload).payload)


def first_prices(body: Any) -> dict[str, int]:
    """Each SKU's first unit price in an order body, where both are a SKU and a price the
    platform could set (so that a valid order is priced and goes down the saga)."""
    out: dict[str, int] = {}
    lines = body.get("lines") if isinstance(body, dict) else None
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        try:
            priced = SkuPriced(
                sku=line.get("sku"),
                unit_price_cents=line.get("unit_price_cents"),
                restock_id=str(uuid.uuid4()),
                priced_at=utcnow(),
            )
        except ValidationError:
            continue
        out.setdefault(priced.sku, priced.unit_price_cents)
    return out


@SETTINGS
@given(body=orders)
async def test_any_order_request_is_4xx_or_a_saga_whose_events_fit_the_broker(
    orders_ctx: ServiceContext,
    inventory_ctx: ServiceContext,
    notes_ctx: ServiceContext,
    body: dict[str, Any],
) -> None:
    await set_prices(orders_ctx, first_prices(body))
    async with http_client(orders_ctx) as http:
        answer = await http.post(
            "/api/v1/orders", content=raw(body), headers={"content-type": "application/json"}
        )
    assert answer.status_code < 500, answer.text[:500]
    assert answer.headers["content-type"].startswith("application/json")
    if answer.status_code >= 400:
        assert answer.json()["detail"], answer.text[:500]
        return
    order_id = answer.json()["order_id"]
    # The largest chain: no stock, so inventory names every SKU in its rejection.
    created = await follow(orders_ctx, order_id, "OrderCreated")
    await deliver(inventory_ctx, created)
    await deliver(orders_ctx, await follow(inventory_ctx, order_id, "StockRejected"))
    await deliver(notes_ctx, await follow(orders_ctx, order_id, "OrderRejected"))
    await follow(notes_ctx, order_id, "CustomerNotified")


@SETTINGS
@given(reason=st.one_of(texts, numbers, st.none()))
async def test_any_cancel_request_is_4xx_or_an_event_that_fits_the_broker(
    orders_ctx: ServiceContext, reason: Any
) -> None:
    order = {
        "customer_id": "c",
        "lines": [{"sku": "s", "quantity": 1, "unit_price_cents": 1}],
        "shipping_address": {"name": "n", "line1": "l", "city": "c", "postal_code": "1"}
        | {"country": "DE"},
    }
    await set_prices(orders_ctx, {"s": 1})
    async with http_client(orders_ctx) as http:
        placed = await http.post("/api/v1/orders", json=order)
        order_id = placed.json()["order_id"]
        answer = await http.post(
            f"/api/v1/orders/{order_id}/cancel",
            content=raw({"reason": reason}),
            headers={"content-type": "application/json"},
        )
    assert answer.status_code < 500, answer.text[:500]
    if answer.status_code == 200:
        cancelled = await follow(orders_ctx, order_id, "OrderCancelled")
        assert cancelled.reason == reason
    else:
        # 413: a reason that only fits the body limit escaped (HTTP_MAX_BODY_BYTES).
        assert answer.status_code in (413, 422), answer.text[:500]
        assert [t for t, _ in await outbox_rows(orders_ctx, order_id)] == ["OrderCreated"]


# --- the CLI's payloads ---------------------------------------------------------------------

CLI_PAYLOADS = st.one_of(
    st.tuples(
        st.just("OrderPlaced"),
        st.builds(
            lambda u, b: {"order_id": u, **b, "placed_at": "now"}, st.uuids().map(str), orders
        ),
    ),
    st.tuples(
        st.just("OrderCancellationRequested"),
        st.fixed_dictionaries({"order_id": st.uuids().map(str), "reason": texts}),
    ),
    st.tuples(
        st.just("FundsDeposited"),
        st.fixed_dictionaries(
            {"deposit_id": st.uuids().map(str), "customer_id": ids, "amount_cents": numbers}
        ),
    ),
    st.tuples(
        st.just("StockRestocked"),
        st.fixed_dictionaries({"restock_id": st.uuids().map(str), "sku": ids, "quantity": numbers}),
    ),
)


@pytest.fixture(scope="module")
def preparer() -> Preparer:
    return Preparer(AvroCodec(Catalogue.load()))


@SETTINGS
@given(case=CLI_PAYLOADS)
def test_the_cli_accepts_only_payloads_the_consumers_accept_and_that_fit_the_broker(
    preparer: Preparer, case: tuple[str, dict[str, Any]]
) -> None:
    event_type, payload = case
    # As `choreo publish --json` reads it: through JSON text (NaN tokens, \\u escapes).
    payload = json.loads(raw(payload))
    try:
        prepared = preparer.prepare(event_type, payload)
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    assert len(prepared.value) < LIMIT
    decoded = preparer.codec.decode(prepared.value).payload
    ALL_EVENTS[event_type].model_validate(decoded)  # a consumer would not dead-letter it


BAD_CLI_FIELDS = {
    "quantity past its maximum": ["--field", f"quantity={MAX_QUANTITY + 1}"],
    "a lone surrogate": ["--field", 'sku="\\ud800"'],
    "a NUL": ["--field", 'sku="a\\u0000b"'],
    "a sku too long": ["--field", "sku=" + "x" * (MAX_ID_LENGTH + 1)],
    "NaN": ["--field", "quantity=NaN"],
}


@pytest.mark.parametrize("case", sorted(BAD_CLI_FIELDS))
async def test_choreo_publish_refuses_out_of_bounds_values_in_one_line_and_sends_nothing(
    env: Env, choreo: Choreo, case: str
) -> None:
    base = ["--field", "restock_id=0b7e9a4c-2f0e-4b8e-9b8a-3c1d2e4f5a6b", "--field", "sku=SKU-1"]
    before = await all_end_offsets(env)
    ran = await choreo(
        "publish", "StockRestocked", *base, "--field", "quantity=1", *BAD_CLI_FIELDS[case]
    )
    assert ran.status == 1, ran
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("choreo: error:"), ran.err
    assert ("quantity" in lines[0]) or ("sku" in lines[0]), lines[0]
    assert await all_end_offsets(env) == before
    # The same command with a value in bounds publishes.
    ok = await choreo("publish", "StockRestocked", *base, "--field", "quantity=1")
    assert ok.status == 0, ok
