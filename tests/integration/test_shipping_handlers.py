"""Shipping's handlers against a real SQLite database: state rows and outbox rows together.

The handlers are called directly, each in its own unit of work, as the consumer runtime
would; no broker is needed. Every test uses fresh random order ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.envelope import utcnow
from events.service import ServiceContext
from schemas.models import Address, OrderCancelled, PaymentCaptured
from services.shipping.app import Settings, build_service
from services.shipping.tables import shipments
from tests.integration.service_kit import (
    deliver,
    http_client,
    open_service,
    outbox_records,
    service_fixture,
)

pytestmark = pytest.mark.integration

shipping = service_fixture(build_service, Settings, name="shipping")


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(Catalogue.load())


async def shipment(ctx: ServiceContext, order_id: str) -> Any:
    async with ctx.db.session() as session:
        query = select(shipments).where(shipments.c.order_id == order_id)
        return (await session.execute(query)).first()


def address(country: str = "DE", postal_code: str = "10115") -> Address:
    return Address(
        name="Ada Lovelace",
        line1="Hauptstr. 1",
        city="Berlin",
        postal_code=postal_code,
        country=country,
    )


def captured(order_id: str, addr: Address | None = None) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=order_id,
        customer_id="cust-1",
        payment_id=f"pay-{uuid.uuid4().hex[:8]}",
        amount_cents=4200,
        shipping_address=addr or address(),
        captured_at=utcnow(),
    )


def cancelled(order_id: str, reason: str = "customer asked") -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer_id="cust-1",
        reason=reason,
        failed_step=None,
        cancelled_at=utcnow(),
    )


def new_order() -> str:
    return str(uuid.uuid4())


# --- payment captured ----------------------------------------------------------------------


async def test_capture_to_a_served_address_schedules_and_announces_it(shipping):
    order = new_order()
    cause = await deliver(shipping, captured(order, address("FR", "75001")))

    row = await shipment(shipping, order)
    assert (row.status, row.carrier, row.customer_id) == ("SCHEDULED", "colissimo", "cust-1")
    assert json.loads(row.address)["postal_code"] == "75001"
    (event,) = await outbox_records(shipping)
    assert event["type"] == "ShipmentScheduled"
    assert (event["topic"], event["key"], event["cause"]) == (
        "shipping.events",
        order,
        cause.event_id,
    )
    assert str(event["order_id"]) == order
    assert event["shipment_id"] == row.shipment_id
    assert event["carrier"] == "colissimo"
    assert event["customer_id"] == "cust-1"
    assert event["shipping_address"]["country"] == "FR"


async def test_capture_to_an_unserved_country_fails_with_the_reason(shipping):
    order = new_order()
    await deliver(shipping, captured(order, address("JP", "100-0001")))

    row = await shipment(shipping, order)
    assert (row.status, row.carrier) == ("FAILED", None)
    (event,) = await outbox_records(shipping)
    assert event["type"] == "ShipmentFailed"
    assert event["key"] == order
    assert event["reason"] == "address not serviceable: country JP is not served"
    assert event["customer_id"] == "cust-1"


async def test_capture_to_a_placeholder_postal_code_fails(shipping):
    order = new_order()
    await deliver(shipping, captured(order, address("US", "00000")))

    assert (await shipment(shipping, order)).status == "FAILED"
    (event,) = await outbox_records(shipping)
    assert event["type"] == "ShipmentFailed"
    assert event["reason"].startswith("address not serviceable: postal code")


async def test_the_supported_countries_come_from_the_router_settings(tmp_path):
    async with open_service(
        build_service, Settings, tmp_path, supported_countries="IT"
    ) as italy_only:
        rome, berlin = new_order(), new_order()
        await deliver(italy_only, captured(rome, address("IT", "00184")))
        await deliver(italy_only, captured(berlin, address("DE", "10115")))

        assert (await shipment(italy_only, rome)).status == "SCHEDULED"
        assert (await shipment(italy_only, berlin)).status == "FAILED"
        assert [e["type"] for e in await outbox_records(italy_only)] == [
            "ShipmentScheduled",
            "ShipmentFailed",
        ]


async def test_a_redelivered_capture_ships_once(shipping):
    order = new_order()
    payment = captured(order)
    env = await deliver(shipping, payment)
    first = await shipment(shipping, order)

    await deliver(shipping, payment, event_id=env.event_id)  # the same message again
    await deliver(shipping, captured(order))  # a second capture for the order

    assert (await shipment(shipping, order)).shipment_id == first.shipment_id
    assert [e["type"] for e in await outbox_records(shipping)] == ["ShipmentScheduled"]


async def test_a_redelivered_failing_capture_fails_once(shipping):
    order = new_order()
    payment = captured(order, address("JP"))
    await deliver(shipping, payment)
    await deliver(shipping, payment)

    assert [e["type"] for e in await outbox_records(shipping)] == ["ShipmentFailed"]


# --- order cancelled -----------------------------------------------------------------------


async def test_cancel_after_scheduling_cancels_the_shipment_once(shipping):
    order = new_order()
    await deliver(shipping, captured(order))
    shipment_id = (await shipment(shipping, order)).shipment_id
    cause = await deliver(shipping, cancelled(order, "payment refunded"))
    await deliver(shipping, cancelled(order, "payment refunded"))  # cancelling twice

    row = await shipment(shipping, order)
    assert (row.status, row.shipment_id, row.reason) == (
        "CANCELLED",
        shipment_id,
        "payment refunded",
    )
    scheduled, cancel = await outbox_records(shipping)
    assert scheduled["type"] == "ShipmentScheduled"
    assert cancel["type"] == "ShipmentCancelled"
    assert (cancel["topic"], cancel["key"], cancel["cause"]) == (
        "shipping.events",
        order,
        cause.event_id,
    )
    assert (cancel["shipment_id"], cancel["reason"]) == (shipment_id, "payment refunded")


async def test_cancel_before_scheduling_tombstones_and_a_late_capture_ships_nothing(shipping):
    order = new_order()
    await deliver(shipping, cancelled(order))
    row = await shipment(shipping, order)
    assert (row.status, row.shipment_id, row.reason) == ("TOMBSTONE", None, "customer asked")

    await deliver(shipping, captured(order))
    await deliver(shipping, cancelled(order))  # and a second cancel changes nothing

    assert (await shipment(shipping, order)).status == "TOMBSTONE"
    assert await outbox_records(shipping) == []


async def test_cancel_after_a_failed_shipment_says_nothing(shipping):
    order = new_order()
    await deliver(shipping, captured(order, address("JP")))
    await deliver(shipping, cancelled(order, "shipping failed"))

    assert (await shipment(shipping, order)).status == "FAILED"
    assert [e["type"] for e in await outbox_records(shipping)] == ["ShipmentFailed"]


async def test_orders_do_not_interfere(shipping):
    shipped, dropped = new_order(), new_order()
    await deliver(shipping, cancelled(dropped))
    await deliver(shipping, captured(shipped))

    assert (await shipment(shipping, shipped)).status == "SCHEDULED"
    assert (await shipment(shipping, dropped)).status == "TOMBSTONE"
    assert [e["key"] for e in await outbox_records(shipping)] == [shipped]


# --- HTTP read side ------------------------------------------------------------------------


@pytest.fixture
async def client(shipping) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(shipping) as http:
        yield http


async def test_get_shipment_shows_the_scheduled_shipment(shipping, client):
    order = new_order()
    await deliver(shipping, captured(order, address("GB", "SW1A 1AA")))
    row = await shipment(shipping, order)

    resp = await client.get(f"/api/v1/shipments/{order}")
    assert resp.status_code == 200
    assert resp.json() == {
        "order_id": order,
        "shipment_id": row.shipment_id,
        "status": "SCHEDULED",
        "carrier": "royal-mail",
    }
    # Any spelling of the uuid finds the same order.
    assert (await client.get(f"/api/v1/shipments/{order.upper()}")).json() == resp.json()


async def test_get_shipment_shows_a_failed_one_without_carrier(shipping, client):
    order = new_order()
    await deliver(shipping, captured(order, address("JP")))

    body = (await client.get(f"/api/v1/shipments/{order}")).json()
    assert (body["status"], body["carrier"]) == ("FAILED", None)


async def test_get_shipment_unknown_or_tombstoned_is_404_json(shipping, client):
    unknown, tombstoned = new_order(), new_order()
    await deliver(shipping, cancelled(tombstoned))

    for order in (unknown, tombstoned):
        resp = await client.get(f"/api/v1/shipments/{order}")
        assert resp.status_code == 404
        assert order in resp.json()["detail"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "%00", "x" * 300])
async def test_get_shipment_with_a_bad_id_is_422(client, bad):
    resp = await client.get(f"/api/v1/shipments/{bad}")
    assert resp.status_code == 422
    assert resp.json()["detail"]


def test_supported_countries_setting_is_validated(monkeypatch):
    monkeypatch.setenv("SUPPORTED_COUNTRIES", " DE , IT ")
    assert Settings().supported == frozenset({"DE", "IT"})
    for bad in ("", "de,FR", "DEU", "DE,,FR", "D1"):
        monkeypatch.setenv("SUPPORTED_COUNTRIES", bad)
        with pytest.raises(ValueError, match="SUPPORTED_COUNTRIES"):
            Settings()


def test_the_service_consumes_the_topics_of_its_handled_events(codec):
    service = build_service(Settings())
    assert set(service.router.handlers) == {"PaymentCaptured", "OrderCancelled"}
    assert set(service.topics) == {codec.catalogue.topic_for(t) for t in service.router.handlers}
