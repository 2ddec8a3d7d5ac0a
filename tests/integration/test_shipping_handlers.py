"""Shipping's handlers against a real SQLite database: state rows and outbox rows together.

The handlers are called directly, each in its own unit of work, as the consumer runtime
would; no broker is needed. Every test uses fresh random order ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.db import Database, sqlite_url
from events.envelope import Envelope, Event, utcnow
from events.models import EventModel
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay
from events.service import ServiceContext, build_app
from events.tables import metadata as platform_metadata
from events.tables import outbox as outbox_table
from schemas.models import Address, OrderCancelled, PaymentCaptured
from services.shipping.app import Settings, build_service
from services.shipping.handlers import build_router
from services.shipping.tables import metadata, shipments

pytestmark = pytest.mark.integration

DEFAULT = Settings.model_fields["supported_countries"].default
SUPPORTED = frozenset(DEFAULT.split(","))


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(Catalogue.load())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(sqlite_url(tmp_path / "shipping.db"))
    await database.create_all(platform_metadata, metadata)
    yield database
    await database.dispose()


class Shipping:
    """The service's handlers over one database, with helpers to read what they wrote."""

    def __init__(self, db: Database, codec: AvroCodec, supported: frozenset[str]) -> None:
        self.db, self.codec = db, codec
        self.outbox = Outbox(codec, "shipping")
        self.router = build_router(supported)
        self._offset = 0

    async def deliver(self, payload: EventModel, *, event_id: str | None = None) -> Envelope:
        env = Envelope(
            event_id=event_id or str(uuid.uuid4()),
            event_type=payload.event_type,
            schema_version=1,
            occurred_at=utcnow(),
            producer="test",
            correlation_id=str(uuid.uuid4()),
            key=getattr(payload, "order_id", ""),
        )
        self._offset += 1
        handler = self.router.handlers[payload.event_type].fn
        async with UnitOfWork(self.db, self.outbox, cause=env) as uow:
            await handler(uow, Event(env, payload, "test-topic", 0, self._offset))
            await uow.commit()
        return env

    async def row(self, order_id: str) -> Any:
        async with self.db.session() as session:
            query = select(shipments).where(shipments.c.order_id == order_id)
            return (await session.execute(query)).first()

    async def emitted(self) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            rows = (await session.execute(select(outbox_table).order_by(outbox_table.c.id))).all()
        out = []
        for r in rows:
            decoded = self.codec.decode(r.payload)
            assert decoded.event_type == r.event_type
            headers = json.loads(r.headers)
            out.append(
                {
                    "type": r.event_type,
                    "topic": r.topic,
                    "key": r.key,
                    "cause": headers.get("causation-id"),
                    **decoded.payload,
                }
            )
        return out


@pytest.fixture
def shipping(db: Database, codec: AvroCodec) -> Shipping:
    return Shipping(db, codec, SUPPORTED)


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
    cause = await shipping.deliver(captured(order, address("FR", "75001")))

    row = await shipping.row(order)
    assert (row.status, row.carrier, row.customer_id) == ("SCHEDULED", "colissimo", "cust-1")
    assert json.loads(row.address)["postal_code"] == "75001"
    (event,) = await shipping.emitted()
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
    await shipping.deliver(captured(order, address("JP", "100-0001")))

    row = await shipping.row(order)
    assert (row.status, row.carrier) == ("FAILED", None)
    (event,) = await shipping.emitted()
    assert event["type"] == "ShipmentFailed"
    assert event["key"] == order
    assert event["reason"] == "address not serviceable: country JP is not served"
    assert event["customer_id"] == "cust-1"


async def test_capture_to_a_placeholder_postal_code_fails(shipping):
    order = new_order()
    await shipping.deliver(captured(order, address("US", "00000")))

    assert (await shipping.row(order)).status == "FAILED"
    (event,) = await shipping.emitted()
    assert event["type"] == "ShipmentFailed"
    assert event["reason"].startswith("address not serviceable: postal code")


async def test_the_supported_countries_come_from_the_router_settings(db, codec):
    italy_only = Shipping(db, codec, frozenset({"IT"}))
    rome, berlin = new_order(), new_order()
    await italy_only.deliver(captured(rome, address("IT", "00184")))
    await italy_only.deliver(captured(berlin, address("DE", "10115")))

    assert (await italy_only.row(rome)).status == "SCHEDULED"
    assert (await italy_only.row(berlin)).status == "FAILED"
    assert [e["type"] for e in await italy_only.emitted()] == [
        "ShipmentScheduled",
        "ShipmentFailed",
    ]


async def test_a_redelivered_capture_ships_once(shipping):
    order = new_order()
    payment = captured(order)
    env = await shipping.deliver(payment)
    first = await shipping.row(order)

    await shipping.deliver(payment, event_id=env.event_id)  # the same message again
    await shipping.deliver(captured(order))  # a second capture for the order

    assert (await shipping.row(order)).shipment_id == first.shipment_id
    assert [e["type"] for e in await shipping.emitted()] == ["ShipmentScheduled"]


async def test_a_redelivered_failing_capture_fails_once(shipping):
    order = new_order()
    payment = captured(order, address("JP"))
    await shipping.deliver(payment)
    await shipping.deliver(payment)

    assert [e["type"] for e in await shipping.emitted()] == ["ShipmentFailed"]


# --- order cancelled -----------------------------------------------------------------------


async def test_cancel_after_scheduling_cancels_the_shipment_once(shipping):
    order = new_order()
    await shipping.deliver(captured(order))
    shipment_id = (await shipping.row(order)).shipment_id
    cause = await shipping.deliver(cancelled(order, "payment refunded"))
    await shipping.deliver(cancelled(order, "payment refunded"))  # cancelling twice

    row = await shipping.row(order)
    assert (row.status, row.shipment_id, row.reason) == (
        "CANCELLED",
        shipment_id,
        "payment refunded",
    )
    scheduled, cancel = await shipping.emitted()
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
    await shipping.deliver(cancelled(order))
    row = await shipping.row(order)
    assert (row.status, row.shipment_id, row.reason) == ("TOMBSTONE", None, "customer asked")

    await shipping.deliver(captured(order))
    await shipping.deliver(cancelled(order))  # and a second cancel changes nothing

    assert (await shipping.row(order)).status == "TOMBSTONE"
    assert await shipping.emitted() == []


async def test_cancel_after_a_failed_shipment_says_nothing(shipping):
    order = new_order()
    await shipping.deliver(captured(order, address("JP")))
    await shipping.deliver(cancelled(order, "shipping failed"))

    assert (await shipping.row(order)).status == "FAILED"
    assert [e["type"] for e in await shipping.emitted()] == ["ShipmentFailed"]


async def test_orders_do_not_interfere(shipping):
    shipped, dropped = new_order(), new_order()
    await shipping.deliver(cancelled(dropped))
    await shipping.deliver(captured(shipped))

    assert (await shipping.row(shipped)).status == "SCHEDULED"
    assert (await shipping.row(dropped)).status == "TOMBSTONE"
    assert [e["key"] for e in await shipping.emitted()] == [shipped]


# --- HTTP read side ------------------------------------------------------------------------


@pytest.fixture
async def client(db, codec, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(var_dir=tmp_path, http_port=0)
    service = build_service(settings)
    outbox = Outbox(codec, "shipping")
    relay = OutboxRelay(db, "127.0.0.1:9")  # never started: the API does not publish
    app = build_app(service, ServiceContext("shipping", settings, db, codec, outbox, relay))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shipping") as http:
        yield http


async def test_get_shipment_shows_the_scheduled_shipment(shipping, client):
    order = new_order()
    await shipping.deliver(captured(order, address("GB", "SW1A 1AA")))
    row = await shipping.row(order)

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
    await shipping.deliver(captured(order, address("JP")))

    body = (await client.get(f"/api/v1/shipments/{order}")).json()
    assert (body["status"], body["carrier"]) == ("FAILED", None)


async def test_get_shipment_unknown_or_tombstoned_is_404_json(shipping, client):
    unknown, tombstoned = new_order(), new_order()
    await shipping.deliver(cancelled(tombstoned))

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
