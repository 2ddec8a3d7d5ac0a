"""The read side agrees with the owners (issue 14, defect 3).

The five services run in this process (``inprocess``) with the query projection beside them.
Requests the owners refuse go in with ordinary ones: a negative deposit and a negative
restock (they fail the owners' models), a deposit and a restock re-sent under new event ids
(counted once by the owners), deposits past 2^63-1 cents, then orders down the saga's paths.
Every customer and SKU view of the query service must then equal what the payments and
inventory databases hold, and a customer or SKU the owners never credited must not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from events.codec import AvroCodec
from events.envelope import Envelope, utcnow
from events.kafka import KafkaConnection
from events.publisher import Draft, publish
from services.inventory.tables import stock
from services.payments.tables import accounts
from tests.integration.inprocess import InProcess, saga_in_process
from tests.integration.test_query_kit import QueryEnv, start_env, stop_env
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

MAX = 2**63 - 1
ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115"}


async def send_raw(
    codec: AvroCodec, bootstrap: str, event_type: str, payload: dict[str, Any], key: str
) -> None:
    """A request as a careless client might send it: Avro-valid, never checked against the
    payload model (``choreo publish`` would refuse it)."""
    envelope = Envelope(
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        schema_version=1,
        occurred_at=utcnow(),
        producer="careless-client",
        correlation_id=str(uuid.uuid4()),
        key=key,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            codec.catalogue.topic_for(event_type),
            codec.encode(event_type, payload),
            key=key.encode(),
            headers=envelope.to_headers(),
        )
    finally:
        await producer.stop()


def deposit(customer: str, cents: int, deposit_id: str | None = None) -> dict[str, Any]:
    return {
        "deposit_id": deposit_id or str(uuid.uuid4()),
        "customer_id": customer,
        "amount_cents": cents,
        "deposited_at": utcnow(),
    }


def restock(
    sku: str, quantity: int, restock_id: str | None = None, price: int | None = None
) -> dict[str, Any]:
    return {
        "restock_id": restock_id or str(uuid.uuid4()),
        "sku": sku,
        "quantity": quantity,
        "restocked_at": utcnow(),
        "unit_price_cents": price,
    }


async def priced(saga: InProcess, *skus: str) -> bool:
    """Orders knows the price of every SKU in ``skus`` (set with its restock)."""
    for sku in skus:
        if (await saga.clients["orders"].get(f"/api/v1/prices/{sku}")).status_code != 200:
            return False
    return True


async def owners(saga: InProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    async with saga.contexts["payments"].db.session() as s:
        money = {r["customer_id"]: r for r in (await s.execute(select(accounts))).mappings()}
    async with saga.contexts["inventory"].db.session() as s:
        skus = {r["sku"]: r for r in (await s.execute(select(stock))).mappings()}
    return money, skus


async def differences(
    saga: InProcess, query: QueryEnv, customers: list[str], skus: list[str]
) -> list[str]:
    """Where a query view and the owner's row disagree (or one exists without the other)."""
    money, levels = await owners(saga)
    out = []
    for customer in customers:
        r = await query.get(f"/customers/{customer}")
        row = money.get(customer)
        if row is None:
            if r.status_code != 404:
                out.append(f"{customer}: not at payments, query shows {r.json()}")
            continue
        if r.status_code != 200:
            out.append(f"{customer}: {row['deposited_cents']} at payments, query {r.status_code}")
            continue
        view = r.json()
        for field in ("balance_cents", "deposited_cents", "captured_cents", "refunded_cents"):
            if view[field] != row[field]:
                out.append(f"{customer}: {field} {view[field]} != payments' {row[field]}")
    for sku in skus:
        r = await query.get(f"/skus/{sku}")
        row = levels.get(sku)
        if row is None:
            if r.status_code != 404:
                out.append(f"{sku}: not at inventory, query shows {r.json()}")
            continue
        if r.status_code != 200:
            out.append(f"{sku}: {row['received']} at inventory, query {r.status_code}")
            continue
        view = r.json()
        for field in ("on_hand", "reserved", "shipped", "received"):
            if view[field] != row[field]:
                out.append(f"{sku}: {field} {view[field]} != inventory's {row[field]}")
    return out


async def test_every_customer_and_sku_view_equals_the_owners_after_refused_requests(
    kafka_bootstrap: str, tmp_path: Path, database_url: Callable[[str], str]
) -> None:
    prefix = unique("agree") + "."
    run = uuid.uuid4().hex[:8]
    rich, poor, big, ghost = (f"cust-{run}-{n}" for n in ("rich", "poor", "big", "ghost"))
    sku_a, sku_b, sku_ghost = (f"sku-{run}-{n}" for n in ("a", "b", "ghost"))
    customers, skus = [rich, poor, big, ghost], [sku_a, sku_b, sku_ghost]
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        query = await start_env(kafka_bootstrap, database_url("query"), prefix=prefix)
        try:
            codec, bootstrap = saga.codec, kafka_bootstrap
            first_deposit, first_restock = deposit(rich, 100_000), restock(sku_a, 100, price=1_000)
            await publish(
                codec,
                KafkaConnection(bootstrap),
                [
                    Draft("FundsDeposited", first_deposit, rich),
                    Draft("FundsDeposited", deposit(poor, 1_000), poor),
                    Draft("StockRestocked", first_restock, sku_a),
                    Draft("StockRestocked", restock(sku_b, 1, price=100), sku_b),
                ],
            )
            refused = [  # (event type, payload, key): none of these may show anywhere
                ("FundsDeposited", deposit(ghost, -500), ghost),  # negative
                ("FundsDeposited", deposit(rich, -500), rich),
                ("FundsDeposited", deposit(rich, 999, first_deposit["deposit_id"]), rich),
                ("FundsDeposited", deposit(big, MAX), big),  # past the bounds, or the
                ("FundsDeposited", deposit(big, MAX), big),  # second overflows the books
                ("StockRestocked", restock(sku_ghost, -5), sku_ghost),
                ("StockRestocked", restock(sku_a, -5), sku_a),
                ("StockRestocked", restock(sku_a, 50, first_restock["restock_id"]), sku_a),
            ]
            for event_type, payload, key in refused:
                await send_raw(codec, bootstrap, event_type, payload, key)
            # A refused request holds back nothing of its key: the same customer's and SKU's
            # next requests are credited and counted (not parked behind the dead letters).
            await publish(
                codec,
                KafkaConnection(bootstrap),
                [
                    Draft("FundsDeposited", deposit(rich, 2_000), rich),
                    Draft("StockRestocked", restock(sku_a, 10), sku_a),
                ],
            )

            async def seeded() -> bool:
                money, levels = await owners(saga)
                return (
                    rich in money
                    and poor in money
                    and money[rich]["deposited_cents"] == 102_000
                    and sku_a in levels
                    and levels[sku_a]["received"] == 110
                    and sku_b in levels
                    and await priced(saga, sku_a, sku_b)
                )

            await eventually(seeded, deadline_s=60, what="the seeding credited and counted")
            orders = {  # order id -> (customer, lines, country)
                str(uuid.uuid4()): (rich, [(sku_a, 2)], "DE"),  # completes
                str(uuid.uuid4()): (poor, [(sku_a, 2)], "DE"),  # 2,000 > 1,000: declined
                str(uuid.uuid4()): (rich, [(sku_b, 5)], "DE"),  # out of stock
                str(uuid.uuid4()): (rich, [(sku_a, 3)], "AQ"),  # refunded, released
            }
            for order_id, (customer, lines, country) in orders.items():
                r = await saga.clients["orders"].post(
                    "/api/v1/orders",
                    json={
                        "order_id": order_id,
                        "customer_id": customer,
                        "lines": [{"sku": s, "quantity": q} for s, q in lines],  # platform's price
                        "shipping_address": {**ADDRESS, "country": country},
                    },
                )
                assert r.status_code == 201, r.text

            async def ended() -> bool:
                for order_id in orders:
                    r = await query.get(f"/orders/{order_id}")
                    if r.status_code != 200 or r.json()["status"] == "PENDING":
                        return False
                return True

            await eventually(ended, deadline_s=90, what="every order to end in the query view")
            statuses = {(await query.get(f"/orders/{o}")).json()["status"] for o in orders}
            assert statuses == {"COMPLETED", "CANCELLED", "REJECTED"}

            async def agree() -> bool:
                return not await differences(saga, query, customers, skus)

            await eventually(agree, deadline_s=60, what="the views to equal the owners' rows")
            assert await differences(saga, query, customers, skus) == []
            money, levels = await owners(saga)
            # The refused requests changed nothing at the owners either.
            assert money[rich]["deposited_cents"] == 102_000 and ghost not in money
            assert levels[sku_a]["received"] == 110 and sku_ghost not in levels
            assert big not in money or money[big]["deposited_cents"] <= MAX
        finally:
            await stop_env(query)
