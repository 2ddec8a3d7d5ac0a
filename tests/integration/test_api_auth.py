"""Bearer tokens on every service's HTTP API (issue 17): every /api/v1 route without a token
answers 401 (``WWW-Authenticate: Bearer``, a JSON body), with a token lacking the scope 403,
another customer's order or customer view 404, and with an operator's token as before;
expired, badly signed and foreign tokens are 401; HS256 and a JWKS (RS256 from a file,
ES256 from a URL) both verify; analytics (faust's web server) refuses the same way; a
hypothesis run of customers' tokens over the orders API finds no 5xx.

The saga services run in process over fresh databases; the query service and analytics
read the session's broker.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.auth import (
    CUSTOMER_SCOPES,
    OPERATOR_READ,
    ORDERS_READ,
    Authenticator,
    AuthSettings,
    mint,
    warn_if_open,
)
from events.envelope import utcnow
from events.service import ServiceContext, build_app
from infra.broker import free_port
from schemas.models import SkuPriced
from services.inventory.app import SERVICE as INVENTORY
from services.inventory.app import Settings as InventorySettings
from services.notifications.app import SERVICE as NOTIFICATIONS
from services.notifications.app import Settings as NotificationsSettings
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as orders_service
from services.payments.app import SERVICE as PAYMENTS
from services.payments.app import Settings as PaymentsSettings
from services.shipping.app import Settings as ShippingSettings
from services.shipping.app import build_service as shipping_service
from tests.integration.service_kit import deliver, open_service, service_fixture, service_of
from tests.integration.test_analytics import running_analytics
from tests.integration.test_query_kit import (
    PATHS,
    QueryEnv,
    Saga,
    min_position,
    publish_saga,
    query_env,
)
from tests.tokens import TEST_SECRET, bearer, customer_headers, operator_headers

pytestmark = pytest.mark.integration
__all__ = ["query_env"]  # the fixture, imported for pytest

orders_ctx = service_fixture(orders_service, OrdersSettings, name="orders_ctx")

CUSTOMER = "cust-auth-ada"
PRICING = str(uuid.uuid4())  # the restock that priced the test's SKU
ADDRESS = {
    "name": "Ada",
    "line1": "1 Main",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}

# What a customer's token gets on each route with ids that are not theirs (or do not exist):
# 403 where only operators read; 404 for another customer's (or no) order or view; the
# listings answer only the customer's own. A route missing here fails the test below.
CUSTOMER_ANSWERS = {
    "orders": {
        "POST /api/v1/orders": 403,  # for another customer
        "GET /api/v1/orders/{order_id}": 404,
        "GET /api/v1/orders": 200,
        "GET /api/v1/orders-summary": 403,
        "POST /api/v1/orders/{order_id}/cancel": 404,
        "GET /api/v1/prices/{sku}": 404,  # customers see prices; this SKU has none
    },
    "inventory": {"GET /api/v1/stock/{sku}": 403, "GET /api/v1/reservations/{order_id}": 403},
    "payments": {
        "GET /api/v1/accounts/{customer_id}": 403,
        "GET /api/v1/payments/{order_id}": 403,
    },
    "shipping": {"GET /api/v1/shipments/{order_id}": 403},
    "notifications": {"GET /api/v1/notifications/{order_id}": 403},
    "query": {
        "GET /api/v1/orders/{order_id}": 404,
        "GET /api/v1/orders": 200,
        "GET /api/v1/stats": 403,
        "GET /api/v1/orders/{order_id}/timeline": 403,
        "GET /api/v1/customers/{customer_id}": 404,
        "GET /api/v1/skus/{sku}": 403,
        "GET /api/v1/projections": 403,
        "GET /api/v1/dependencies": 403,
        "GET /api/v1/analytics": 403,
    },
}


def api_routes(app: FastAPI) -> dict[str, tuple[str, str]]:
    """``"METHOD /path"`` -> (method, a concrete path) of every /api/v1 route (from the
    app's OpenAPI document, which lists every route of its routers)."""
    out = {}
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/api/v1"):
            concrete = path.format(
                order_id=uuid.uuid4(), sku="sku-auth", customer_id="cust-auth-other"
            )
            for method in operations:
                out[f"{method.upper()} {path}"] = (method.upper(), concrete)
    return out


def order_body(customer: str) -> dict[str, Any]:
    lines = [{"sku": "sku-auth", "quantity": 1, "unit_price_cents": 100}]
    return {"customer_id": customer, "lines": lines, "shipping_address": ADDRESS}


async def call(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body = order_body("cust-auth-other") if path == "/api/v1/orders" else {}
    if method == "POST":
        return await http.post(path, json=body, headers=headers)
    return await http.get(path, headers=headers)


def assert_refused(r: httpx.Response, status: int, where: str) -> None:
    assert r.status_code == status, f"{where}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), where
    assert isinstance(r.json()["detail"], str) and r.json()["detail"], where
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer"), where


async def check_every_route(name: str, app: FastAPI) -> None:
    routes = api_routes(app)
    unexpected = set(routes) - set(CUSTOMER_ANSWERS[name])
    assert routes and not unexpected, f"{name}: routes without an expectation: {unexpected}"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        for key, (method, path) in routes.items():
            assert_refused(await call(http, method, path, {}), 401, f"{name} {key} no token")
            junk = {"Authorization": "Bearer not-a-jwt"}
            assert_refused(await call(http, method, path, junk), 401, f"{name} {key} junk")
            nothing = bearer(CUSTOMER, ())
            assert_refused(await call(http, method, path, nothing), 403, f"{name} {key} no scope")
            r = await call(http, method, path, customer_headers(CUSTOMER))
            assert r.status_code == CUSTOMER_ANSWERS[name][key], f"{name} {key}: {r.text}"
            r = await call(http, method, path, operator_headers())
            # As before the tokens: found or not found, never refused, never a fault (the
            # analytics proxy's 503: no analytics service runs here).
            fault = r.status_code >= 500 and not key.endswith("/analytics")
            assert not fault and r.status_code not in (401, 403), f"{name} {key}: {r.text}"


SAGA_SERVICES: dict[str, tuple[Any, Any]] = {
    "orders": (orders_service, OrdersSettings),
    "inventory": (INVENTORY, InventorySettings),
    "payments": (PAYMENTS, PaymentsSettings),
    "shipping": (shipping_service, ShippingSettings),
    "notifications": (NOTIFICATIONS, NotificationsSettings),
}


@pytest.mark.parametrize("which", sorted(SAGA_SERVICES))
async def test_every_saga_service_route_needs_a_token_and_its_scope(
    which: str, tmp_path: Path, database_url: Callable[[str], str]
):
    service, settings_type = SAGA_SERVICES[which]
    async with open_service(service, settings_type, tmp_path, database_url(which)) as ctx:
        await check_every_route(which, build_app(service_of(ctx), ctx))


async def test_every_query_route_needs_a_token_and_customers_see_only_their_own(
    query_env: QueryEnv,
):
    await check_every_route("query", query_env.app)
    saga = Saga()
    mine = saga.order(PATHS[0], CUSTOMER, [(saga.sku("w"), 1, 100)])
    theirs = saga.order(PATHS[0], saga.customer("bo"), [(saga.sku("w"), 1, 100)])
    wait = {"min_position": min_position(await publish_saga(query_env, saga))}
    http, me = query_env.http, customer_headers(CUSTOMER)

    async def get(path: str, headers: dict[str, str]) -> httpx.Response:
        return await http.get("/api/v1" + path, params=wait, headers=headers)

    assert (await get(f"/orders/{mine.order_id}", me)).json()["customer_id"] == CUSTOMER
    assert (await get(f"/orders/{theirs.order_id}", me)).status_code == 404
    assert (await get(f"/orders/{theirs.order_id}", operator_headers())).status_code == 200
    listed = (await get("/orders", me)).json()["items"]
    assert [o["order_id"] for o in listed] == [mine.order_id]
    other = await http.get(
        "/api/v1/orders", params={**wait, "customer_id": theirs.customer_id}, headers=me
    )
    assert other.json()["items"] == []
    assert (await get(f"/customers/{CUSTOMER}", me)).json()["orders_count"] == 1
    assert (await get(f"/customers/{theirs.customer_id}", me)).status_code == 404
    assert (await get(f"/orders/{mine.order_id}/timeline", me)).status_code == 403
    # The operator-only parts outside /api/v1: the schema and the metrics.
    for path in ("/openapi.json", "/metrics"):
        assert_refused(await http.get(path, headers={"Authorization": ""}), 401, path)
        assert_refused(await http.get(path, headers=me), 403, path)
        assert (await http.get(path)).status_code == 200  # the client's operator token
    for path in ("/health", "/dashboard", "/dashboard/config"):
        assert (await http.get(path, headers={"Authorization": ""})).status_code == 200, path


async def stored_order(ctx: ServiceContext, customer: str) -> str:
    """An order of ``customer`` placed through the API by an operator (its SKU priced)."""
    price = SkuPriced(sku="sku-auth", unit_price_cents=100, restock_id=PRICING, priced_at=utcnow())
    await deliver(ctx, price)
    transport = httpx.ASGITransport(app=build_app(service_of(ctx), ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        r = await http.post("/api/v1/orders", json=order_body(customer), headers=operator_headers())
    assert r.status_code == 201, r.text
    return str(r.json()["order_id"])


async def test_a_customer_reads_and_cancels_only_their_own_orders(orders_ctx: ServiceContext):
    mine = await stored_order(orders_ctx, CUSTOMER)
    theirs = await stored_order(orders_ctx, "cust-auth-bo")
    app = build_app(service_of(orders_ctx), orders_ctx)
    me = customer_headers(CUSTOMER)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        assert (await http.get(f"/api/v1/orders/{mine}", headers=me)).status_code == 200
        hidden = await http.get(f"/api/v1/orders/{theirs}", headers=me)
        assert hidden.status_code == 404 and theirs in hidden.json()["detail"]
        listed = (await http.get("/api/v1/orders", headers=me)).json()
        assert [o["order_id"] for o in listed] == [mine]
        others = await http.get(
            "/api/v1/orders", params={"customer_id": "cust-auth-bo"}, headers=me
        )
        assert others.json() == []
        cancel = await http.post(f"/api/v1/orders/{theirs}/cancel", json={}, headers=me)
        assert cancel.status_code == 404
        ops = operator_headers()
        assert (await http.get(f"/api/v1/orders/{theirs}", headers=ops)).json()[
            "status"
        ] == "PENDING"
        reader = bearer(CUSTOMER, (ORDERS_READ,))  # may read, may not write
        assert (await http.post(f"/api/v1/orders/{mine}/cancel", headers=reader)).status_code == 403
        assert (await http.post(f"/api/v1/orders/{mine}/cancel", headers=me)).status_code == 200
        placed = await http.post("/api/v1/orders", json=order_body(CUSTOMER), headers=me)
        assert placed.status_code == 201 and placed.json()["customer_id"] == CUSTOMER
        for_other = await http.post("/api/v1/orders", json=order_body("cust-auth-bo"), headers=me)
        assert_refused(for_other, 403, "placing for another customer")


def signed(key: Any, algorithm: str, kid: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "op", "scope": OPERATOR_READ, "iss": "choreo", "aud": "choreo"}
    body.update({"iat": now, "exp": now + 600, **claims})
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


async def status_with(ctx: ServiceContext, token: str) -> int:
    app = build_app(service_of(ctx), ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        headers = {"Authorization": f"Bearer {token}"}
        return (await http.get("/api/v1/orders-summary", headers=headers)).status_code


async def test_expired_foreign_and_badly_signed_tokens_are_401(orders_ctx: ServiceContext):
    assert await status_with(orders_ctx, signed(TEST_SECRET, "HS256")) == 200
    long_ago = int(time.time()) - 3600
    refused = {
        "expired": signed(TEST_SECRET, "HS256", exp=long_ago),
        "other secret": signed("another-secret-of-at-least-32-characters!", "HS256"),
        "other audience": signed(TEST_SECRET, "HS256", aud="someone-else"),
        "other issuer": signed(TEST_SECRET, "HS256", iss="someone-else"),
        "unsigned": jwt.encode({"sub": "op", "scope": OPERATOR_READ}, None, algorithm="none"),
        "no expiry": jwt.encode(
            {"sub": "op", "scope": OPERATOR_READ, "iss": "choreo", "aud": "choreo"}, TEST_SECRET
        ),
    }
    for why, token in refused.items():
        assert await status_with(orders_ctx, token) == 401, why
    within_leeway = signed(TEST_SECRET, "HS256", exp=int(time.time()) - 5)
    assert await status_with(orders_ctx, within_leeway) == 200


async def test_rs256_public_keys_from_a_jwks_file(tmp_path: Path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    async with open_service(
        orders_service, OrdersSettings, tmp_path, auth_jwt_secret=None, auth_jwks_file=jwks
    ) as ctx:
        assert await status_with(ctx, signed(private, "RS256", kid="k1")) == 200
        assert await status_with(ctx, signed(private, "RS256", kid="k2")) == 401  # unknown key
        # The shared secret means nothing here, nor does the public key used as an HMAC key.
        assert await status_with(ctx, signed(TEST_SECRET, "HS256", kid="k1")) == 401
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await status_with(ctx, signed(other, "RS256", kid="k1")) == 401


@contextlib.contextmanager
def serving_jwks(body: bytes) -> Iterator[str]:
    """A real HTTP server answering every GET with ``body`` (the identity provider's JWKS)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        thread.join()


async def test_es256_public_keys_from_a_jwks_url(tmp_path: Path):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "e1", "alg": "ES256", "use": "sig"}]}).encode()
    with serving_jwks(body) as url:
        async with open_service(
            orders_service, OrdersSettings, tmp_path, auth_jwt_secret=None, auth_jwks_url=url
        ) as ctx:
            assert await status_with(ctx, signed(private, "ES256", kid="e1")) == 200
            other = ec.generate_private_key(ec.SECP256R1())
            assert await status_with(ctx, signed(other, "ES256", kid="e1")) == 401


async def test_auth_mode_none_answers_anyone_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    async with open_service(orders_service, OrdersSettings, tmp_path, auth_mode="none") as ctx:
        app = build_app(service_of(ctx), ctx)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.get("/api/v1/orders-summary")).status_code == 200
        with caplog.at_level("WARNING"):
            warn_if_open("orders", ctx.settings)
    assert "AUTH_MODE=none" in caplog.text


def test_jwt_mode_needs_one_good_key(tmp_path: Path):
    with pytest.raises(ValueError, match="jwt needs one key"):
        AuthSettings(auth_jwt_secret=None)
    with pytest.raises(ValueError, match="given: AUTH_JWT_SECRET, AUTH_JWKS_URL"):
        AuthSettings(auth_jwks_url="https://idp.example/jwks.json")  # and the secret
    with pytest.raises(ValueError, match="at least 32 characters"):
        AuthSettings(auth_jwt_secret="short")
    key = tmp_path / "secret"
    key.write_text("a" * 40 + "\n")
    read = AuthSettings(auth_jwt_secret=None, auth_jwt_secret_file=key)
    assert read.auth_jwt_secret is not None and read.auth_jwt_secret.get_secret_value() == "a" * 40
    assert Authenticator.from_settings(AuthSettings(auth_mode="none")).enabled is False


@pytest.fixture
async def orders_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with open_service(orders_service, OrdersSettings, tmp_path) as ctx:
        transport = httpx.ASGITransport(app=build_app(service_of(ctx), ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http


IDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=40)
PATHS_TRIED = st.sampled_from(
    [
        "/orders",
        "/orders/{id}",
        "/orders/{id}/cancel",
        "/orders-summary",
        "/orders?customer_id={id}",
    ]
)


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    subject=IDS,
    scopes=st.lists(st.sampled_from([*CUSTOMER_SCOPES, OPERATOR_READ, "junk"]), max_size=3),
    path=PATHS_TRIED,
    oid=st.one_of(st.uuids().map(str), IDS),
    post=st.booleans(),
    customer=IDS,
)
async def test_tokens_of_any_subject_and_scopes_never_make_a_5xx(
    orders_app: httpx.AsyncClient,
    subject: str,
    scopes: list[str],
    path: str,
    oid: str,
    post: bool,
    customer: str,
):
    headers = {"Authorization": f"Bearer {mint(TEST_SECRET, subject, scopes)}"}
    url = "/api/v1" + path.format(id=oid)
    if post:
        r = await orders_app.post(url, json=order_body(customer), headers=headers)
    else:
        r = await orders_app.get(url, headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code in (401, 403):
        assert r.json()["detail"]


async def test_analytics_needs_an_operator_token(kafka_bootstrap: str, tmp_path: Path):
    async with running_analytics(kafka_bootstrap, tmp_path) as analytics:
        http = analytics.http
        url = "/api/v1/analytics?window=minute"
        for path in (url, "/metrics"):
            assert_refused(await http.get(path, headers={"Authorization": ""}), 401, path)
            expired = bearer("op", (OPERATOR_READ,), ttl_s=-3600)
            assert_refused(await http.get(path, headers=expired), 401, path)
            assert_refused(await http.get(path, headers=customer_headers(CUSTOMER)), 403, path)
            assert (await http.get(path)).status_code == 200, path  # the client's operator token
        assert (await http.get("/health", headers={"Authorization": ""})).status_code == 200
