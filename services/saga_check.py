"""Drives the reference saga from outside and checks its invariants through the services'
HTTP APIs (and, when payments and shipping call them, the payment provider's ledger and the
carrier's bookings). Used by `choreo demo` and the end-to-end tests; imports no service
code."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from events.codec import AvroCodec
from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.publisher import Draft, publish

PORTS = {
    "orders": 8101,
    "inventory": 8102,
    "payments": 8103,
    "shipping": 8104,
    "notifications": 8105,
    "provider": 8108,  # the payment provider stand-in (no /api/v1, no token)
    "carrier": 8109,  # the carrier stand-in
}
TERMINAL = {"COMPLETED", "REJECTED", "CANCELLED"}
SERVICEABLE = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
UNSERVICEABLE = {**SERVICEABLE, "city": "McMurdo", "postal_code": "9999", "country": "AQ"}


@dataclass
class World:
    """One run's seeded entities (unique per run, so runs never see each other's data)."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    stock: dict[str, int] = field(default_factory=dict)
    deposits: dict[str, int] = field(default_factory=dict)
    prices: dict[str, int] = field(default_factory=dict)  # SKU -> unit price set with the stock
    orders: dict[str, str] = field(default_factory=dict)  # order id -> path
    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    customers: set[str] = field(default_factory=set)

    def sku(self, name: str) -> str:
        return f"sku-{self.run}-{name}"

    def customer(self, name: str) -> str:
        return f"cust-{self.run}-{name}"


class Api:
    def __init__(
        self, ports: dict[str, int] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """``headers``: what every request carries (an operator's bearer token)."""
        self.ports = ports or PORTS
        self.http = httpx.AsyncClient(timeout=10.0, headers=headers)

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/api/v1{path}"

    async def get(self, service: str, path: str) -> Any | None:
        r = await self.http.get(self.url(service, path))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    async def external(self, name: str, path: str) -> Any:
        """GET ``path`` of a stand-in third party (the provider, the carrier): no /api/v1."""
        r = await self.http.get(f"http://127.0.0.1:{self.ports[name]}{path}")
        r.raise_for_status()
        return r.json()

    async def post(self, service: str, path: str, body: dict[str, Any]) -> Any:
        r = await self.http.post(self.url(service, path), json=body)
        r.raise_for_status()
        return r.json()

    async def close(self) -> None:
        await self.http.aclose()


async def seed(
    world: World,
    codec: AvroCodec,
    kafka: KafkaConnection,
    api: Api,
    stock: dict[str, int],
    deposits: dict[str, int],
    *,
    prices: dict[str, int],
) -> None:
    """Restocks (at ``prices``: the platform's, per SKU name) and deposits, then waits until
    inventory and payments counted them and orders knows every price."""
    drafts = []
    for name, qty in stock.items():
        sku = world.sku(name)
        world.stock[sku] = world.stock.get(sku, 0) + qty
        price = prices.get(name)
        if price is not None:
            world.prices[sku] = price
        drafts.append(
            Draft(
                "StockRestocked",
                {
                    "restock_id": str(uuid.uuid4()),
                    "sku": sku,
                    "quantity": qty,
                    "restocked_at": utcnow(),
                    "unit_price_cents": price,
                },
                sku,
            )
        )
    for name, cents in deposits.items():
        cust = world.customer(name)
        world.deposits[cust] = world.deposits.get(cust, 0) + cents
        drafts.append(
            Draft(
                "FundsDeposited",
                {
                    "deposit_id": str(uuid.uuid4()),
                    "customer_id": cust,
                    "amount_cents": cents,
                    "deposited_at": utcnow(),
                },
                cust,
            )
        )
    await publish(codec, kafka, drafts, producer="choreo-demo")

    async def seeded() -> bool:
        for sku, qty in world.stock.items():
            s = await api.get("inventory", f"/stock/{sku}")
            if s is None or s["received"] < qty:
                return False
        for cust, cents in world.deposits.items():
            a = await api.get("payments", f"/accounts/{cust}")
            if a is None or a["deposited_cents"] < cents:
                return False
        for sku, cents in world.prices.items():  # orders prices orders from its replica
            p = await api.get("orders", f"/prices/{sku}")
            if p is None or p["unit_price_cents"] != cents:
                return False
        return True

    await wait_for(seeded, 60, "seed stock, prices and deposits")


def order_body(
    world: World,
    customer: str,
    lines: list[tuple[str, int] | tuple[str, int, int]],
    address: dict[str, str],
) -> dict[str, Any]:
    """An order of (SKU name, quantity) lines; a line's third value is the unit price the
    customer was shown (it must be the platform's, else 422), without it the platform's
    price is charged."""
    body_lines: list[dict[str, Any]] = []
    for name, quantity, *shown in lines:
        line: dict[str, Any] = {"sku": world.sku(name), "quantity": quantity}
        if shown:
            line["unit_price_cents"] = shown[0]
        body_lines.append(line)
    return {
        "order_id": str(uuid.uuid4()),
        "customer_id": world.customer(customer),
        "lines": body_lines,
        "shipping_address": address,
    }


async def place_http(world: World, api: Api, path: str, body: dict[str, Any]) -> str:
    await api.post("orders", "/orders", body)
    world.orders[body["order_id"]] = path
    world.lines[body["order_id"]] = body["lines"]
    world.customers.add(body["customer_id"])
    return str(body["order_id"])


def placed_draft(world: World, path: str, body: dict[str, Any]) -> Draft:
    world.orders[body["order_id"]] = path
    world.lines[body["order_id"]] = body["lines"]
    world.customers.add(body["customer_id"])
    # The OrderPlaced contract carries a price per line: the one the customer was shown.
    lines = [{"unit_price_cents": world.prices.get(ln["sku"]), **ln} for ln in body["lines"]]
    payload = {**body, "lines": lines, "placed_at": utcnow()}
    return Draft("OrderPlaced", payload, body["order_id"])


def cancel_draft(order_id: str, reason: str = "customer changed their mind") -> Draft:
    return Draft(
        "OrderCancellationRequested",
        {"order_id": order_id, "reason": reason, "requested_at": utcnow()},
        order_id,
    )


async def statuses(world: World, api: Api) -> dict[str, dict[str, Any]]:
    """The run's orders as orders lists them (by customer and status), and one by one those
    a listing's 500 rows left out (a customer with more orders in one status)."""
    out: dict[str, dict[str, Any]] = {}
    for cust in world.customers:
        for status in ("PENDING", *sorted(TERMINAL)):
            query = f"/orders?customer_id={cust}&status={status}&limit=500"
            for row in await api.get("orders", query) or []:
                if row["order_id"] in world.orders:
                    out[row["order_id"]] = row
    for oid in world.orders.keys() - out.keys():
        row = await api.get("orders", f"/orders/{oid}")
        if row is not None:
            out[oid] = row
    return out


async def wait_for(
    check: Callable[[], Any],
    deadline_s: float,
    what: str,
    progress: Callable[[], Any] | None = None,
) -> None:
    end = time.monotonic() + deadline_s
    while True:
        if await check():
            return
        if progress is not None:
            await progress()
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)  # poll interval between checks


async def check_invariants(world: World, api: Api, dependencies: bool = False) -> list[str]:
    """Every violated invariant, as a sentence; empty when the run is consistent.
    ``dependencies``: payments and shipping call the provider and the carrier, whose ledger
    and bookings must then agree with them too."""
    problems: list[str] = []
    orders = await statuses(world, api)
    if dependencies:
        problems.extend(await check_dependencies(world, api, orders))
    shipped: dict[str, int] = {}
    for oid, path in world.orders.items():
        order = orders.get(oid)
        if order is None or order["status"] not in TERMINAL:
            problems.append(
                f"order {oid} ({path}) has no terminal state: {order and order['status']}"
            )
            continue
        status = order["status"]
        payment = await api.get("payments", f"/payments/{oid}")
        shipment = await api.get("shipping", f"/shipments/{oid}")
        note = await api.get("notifications", f"/notifications/{oid}")
        reservation = await api.get("inventory", f"/reservations/{oid}")
        captured = payment is not None and payment["status"] == "CAPTURED"
        if note is None or note["order_status"] != status:
            problems.append(f"order {oid} {status}: notification {note and note['order_status']}")
        if status == "COMPLETED":
            if not captured:
                problems.append(f"order {oid} COMPLETED but payment {payment}")
            if shipment is None or shipment["status"] != "SCHEDULED":
                problems.append(f"order {oid} COMPLETED but shipment {shipment}")
            if reservation is None or reservation["status"] != "SHIPPED":
                problems.append(f"order {oid} COMPLETED but reservation {reservation}")
            for line in world.lines[oid]:
                shipped[line["sku"]] = shipped.get(line["sku"], 0) + line["quantity"]
        else:
            if captured:
                problems.append(f"order {oid} {status} but its payment is still captured")
            if shipment is not None and shipment["status"] == "SCHEDULED":
                problems.append(f"order {oid} {status} but its shipment is still scheduled")
            if reservation is not None and reservation["status"] in ("RESERVED", "SHIPPED"):
                problems.append(f"order {oid} {status} but stock is {reservation['status']}")
    for sku, seeded in world.stock.items():
        s = await api.get("inventory", f"/stock/{sku}")
        if s is None:
            problems.append(f"{sku}: unknown to inventory")
            continue
        if s["received"] != seeded:
            problems.append(f"{sku}: received {s['received']}, seeded {seeded}")
        if s["on_hand"] + s["reserved"] != s["received"] - s["shipped"]:
            problems.append(
                f"{sku}: on hand {s['on_hand']} + reserved {s['reserved']} != "
                f"received {s['received']} - shipped {s['shipped']}"
            )
        if s["shipped"] != shipped.get(sku, 0):
            problems.append(
                f"{sku}: shipped {s['shipped']}, completed orders {shipped.get(sku, 0)}"
            )
    for cust, deposited in world.deposits.items():
        a = await api.get("payments", f"/accounts/{cust}")
        if a is None:
            problems.append(f"{cust}: unknown to payments")
            continue
        if a["deposited_cents"] != deposited:
            problems.append(f"{cust}: deposited {a['deposited_cents']}, seeded {deposited}")
        if a["balance_cents"] + a["captured_cents"] - a["refunded_cents"] != deposited:
            problems.append(f"{cust}: balance + captured - refunded != deposited ({a})")
    return problems


async def check_dependencies(
    world: World, api: Api, orders: dict[str, dict[str, Any]]
) -> list[str]:
    """The provider's ledger equals payments' captures minus refunds per customer, and the
    carrier holds exactly one live booking per completed order (and none for another)."""
    problems: list[str] = []
    for cust in sorted(world.customers | set(world.deposits)):
        ledger = await api.external("provider", f"/v1/ledger/{cust}")
        books = await api.get("payments", f"/accounts/{cust}") or {}
        at_provider = ledger["captured_cents"] - ledger["refunded_cents"]
        in_payments = books.get("captured_cents", 0) - books.get("refunded_cents", 0)
        if at_provider != in_payments:
            problems.append(
                f"{cust}: provider captured - refunded = {at_provider}, payments' = "
                f"{in_payments} (provider {ledger}, payments {books})"
            )
    live: dict[str, int] = {}
    for booking in (await api.external("carrier", "/v1/bookings?status=booked"))["bookings"]:
        if booking["reference"] in world.orders:
            live[booking["reference"]] = live.get(booking["reference"], 0) + 1
    for oid in world.orders:
        completed = orders.get(oid, {}).get("status") == "COMPLETED"
        count = live.get(oid, 0)
        if count != (1 if completed else 0):
            status = orders.get(oid, {}).get("status")
            problems.append(f"order {oid} {status}: {count} live bookings at the carrier")
    return problems
