"""Random requests to every endpoint of the query API never make it fail (no 5xx), and every
answer is JSON in the documented shape.

Paths and parameters come from hypothesis: known and unknown ids, arbitrary text (quoted into
the path), valid and broken cursors and positions, out-of-range numbers, unknown parameters.
The only 5xx allowed is 504, and only for a request that asked to wait for a position.
"""

from __future__ import annotations

import string
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.query.params import encode_cursor
from tests.integration.test_query_kit import (
    PATHS,
    QueryEnv,
    Saga,
    min_position,
    publish_saga,
    query_env,
)

pytestmark = pytest.mark.integration
__all__ = ["query_env"]

SAGA = Saga()
CUSTOMER = SAGA.customer("p")
SKU = SAGA.sku("p")
ORDERS = [SAGA.order(path, CUSTOMER, [(SKU, 1, 10)]).order_id for path in PATHS]
_HELD = SAGA.cut(SAGA.order("success", CUSTOMER, [(SKU, 1, 10)]), 3)  # still under way
SAGA.stuck(_HELD, "shipping", datetime(2025, 3, 1, 12, 5, tzinfo=UTC))
ORDERS.append(_HELD.order_id)

noise = st.text(alphabet=string.printable + "éü€\u2028", max_size=40)
ids = st.one_of(
    st.sampled_from(ORDERS),
    st.uuids().map(str),
    st.sampled_from([CUSTOMER, SKU, "", "..", "%", "?", "a/b", "0"]),
    noise,
    st.text(min_size=250, max_size=300, alphabet="x"),
)
numbers = st.one_of(st.integers(-5, 600).map(str), noise, st.just("1e3"), st.just("0x10"))
positions = st.one_of(
    st.builds(
        lambda t, p, o: f"{t}:{p}:{o}",
        st.sampled_from(["orders.events", "nope", "a:b"]),
        st.integers(-1, 5),
        st.integers(-1, 10**19),
    ),
    noise,
)
cursors = st.one_of(
    st.builds(
        encode_cursor,
        st.sampled_from(["2025-03-01T12:00:00.000000+00:00", "x"]),
        noise,
        st.booleans(),
    ),
    noise,
)
params = st.dictionaries(
    st.sampled_from(
        [
            "status",
            "customer_id",
            "limit",
            "cursor",
            "min_position",
            "wait_ms",
            "stuck",
            "newest_first",
            "other",
        ]
    ),
    st.one_of(
        st.sampled_from(["PENDING", "COMPLETED", "REJECTED", "CANCELLED", "lost"]),
        st.sampled_from(["true", "false", "1", "0", "yes", "maybe", ""]),
        numbers,
        cursors,
        positions,
        ids,
    ),
    max_size=5,
)
templates = st.sampled_from(
    [
        "/orders/{}",
        "/orders",
        "/orders/{}/timeline",
        "/customers/{}",
        "/skus/{}",
        "/projections",
        "/stats",
        "/{}",
    ]
)


@pytest.fixture
async def seeded(query_env: QueryEnv) -> QueryEnv:
    published = await publish_saga(query_env, SAGA)
    r = await query_env.get("/projections", min_position=min_position(published), wait_ms=10_000)
    assert r.status_code == 200
    return query_env


def _prefixed(env: QueryEnv, query: dict[str, str]) -> dict[str, str]:
    # Positions name this environment's topics half of the time, so some are valid.
    out = dict(query)
    value = out.get("min_position")
    if value and value.startswith("orders.events") and len(value) % 2:
        out["min_position"] = env.prefix + value
    wait = out.get("wait_ms", "")
    if wait.isdigit() and int(wait) > 50:
        out["wait_ms"] = "50"  # a slow wait tests nothing more; keep the run short
    return out


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(template=templates, segment=ids, query=params)
async def test_random_requests_never_fail(seeded: QueryEnv, template, segment, query):
    path = template.format(urllib.parse.quote(segment, safe=""))
    query = _prefixed(seeded, query)
    if "min_position" in query and "wait_ms" not in query:
        query["wait_ms"] = "20"
    r = await seeded.http.get("/api/v1" + path, params=query)
    assert r.status_code < 500 or (r.status_code == 504 and "min_position" in query), (
        path,
        query,
        r.status_code,
        r.text[:300],
    )
    assert r.headers["content-type"].startswith("application/json"), (path, r.headers)
    body: Any = r.json()
    if r.status_code != 200:
        assert "detail" in body
    elif path.startswith("/orders/") and path.endswith("/timeline"):
        assert body["events"] and all("event_id" in e for e in body["events"])
    elif path == "/orders":
        assert set(body) == {"items", "next_cursor"}
    elif path == "/stats":
        assert set(body) == {"by_status", "stuck", "total"}
        assert sum(body["by_status"].values()) == body["total"] == len(ORDERS)
    elif path.startswith("/orders/") and segment not in (".", ".."):
        # A dot segment is resolved by the client (RFC 3986): that request names no order.
        assert body["order_id"] in ORDERS and body["status"]


async def test_every_order_of_the_seed_is_readable(seeded: QueryEnv):
    for order_id in ORDERS:
        assert (await seeded.get(f"/orders/{order_id}")).status_code == 200
    assert (await seeded.get(f"/orders/{uuid.uuid4()}")).status_code == 404
