"""Notifications' handlers against a real SQLite database: one notification per order.

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
from schemas.models import OrderCancelled, OrderCompleted, OrderRejected
from services.notifications.app import SERVICE, Settings
from services.notifications.handlers import router
from services.notifications.tables import metadata, sent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(Catalogue.load())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(sqlite_url(tmp_path / "notifications.db"))
    await database.create_all(platform_metadata, metadata)
    yield database
    await database.dispose()


class Notifications:
    """The service's handlers over one database, with helpers to read what they wrote."""

    def __init__(self, db: Database, codec: AvroCodec) -> None:
        self.db, self.codec = db, codec
        self.outbox = Outbox(codec, "notifications")
        self._offset = 0

    async def deliver(self, payload: EventModel, *, event_id: str | None = None) -> Envelope:
        env = Envelope(
            event_id=event_id or str(uuid.uuid4()),
            event_type=payload.event_type,
            schema_version=1,
            occurred_at=utcnow(),
            producer="orders",
            correlation_id=str(uuid.uuid4()),
            key=getattr(payload, "order_id", ""),
        )
        self._offset += 1
        handler = router.handlers[payload.event_type].fn
        async with UnitOfWork(self.db, self.outbox, cause=env) as uow:
            await handler(uow, Event(env, payload, "orders.events", 0, self._offset))
            await uow.commit()
        return env

    async def rows(self, order_id: str) -> list[Any]:
        async with self.db.session() as session:
            query = select(sent).where(sent.c.order_id == order_id)
            return list((await session.execute(query)).all())

    async def emitted(self) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            rows = (await session.execute(select(outbox_table).order_by(outbox_table.c.id))).all()
        out = []
        for r in rows:
            decoded = self.codec.decode(r.payload)
            assert decoded.event_type == r.event_type
            out.append(
                {
                    "type": r.event_type,
                    "topic": r.topic,
                    "key": r.key,
                    "cause": json.loads(r.headers).get("causation-id"),
                    **decoded.payload,
                }
            )
        return out


@pytest.fixture
def notifications(db: Database, codec: AvroCodec) -> Notifications:
    return Notifications(db, codec)


def new_order() -> str:
    return str(uuid.uuid4())


def completed(order_id: str) -> OrderCompleted:
    return OrderCompleted(
        order_id=order_id,
        customer_id="cust-7",
        total_cents=1999,
        shipment_id="shp-42",
        completed_at=utcnow(),
    )


def rejected(order_id: str) -> OrderRejected:
    return OrderRejected(
        order_id=order_id,
        customer_id="cust-7",
        reason="out of stock: sku-1",
        failed_step="inventory",
        rejected_at=utcnow(),
    )


def cancelled(order_id: str, reason: str = "insufficient funds") -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer_id="cust-7",
        reason=reason,
        failed_step="payments",
        cancelled_at=utcnow(),
    )


TERMINAL = [
    (completed, "COMPLETED", "is complete and on its way (shipment shp-42)."),
    (rejected, "REJECTED", "Sorry, we could not accept your order"),
    (cancelled, "CANCELLED", "was cancelled: insufficient funds."),
]


@pytest.mark.parametrize(("make", "status", "text"), TERMINAL, ids=[t[1] for t in TERMINAL])
async def test_a_terminal_event_notifies_the_customer(notifications, make, status, text):
    order = new_order()
    cause = await notifications.deliver(make(order))

    (row,) = await notifications.rows(order)
    assert (row.order_status, row.customer_id, row.cause_event_id) == (
        status,
        "cust-7",
        cause.event_id,
    )
    assert text in row.message
    assert order in row.message
    (event,) = await notifications.emitted()
    assert event["type"] == "CustomerNotified"
    assert (event["topic"], event["key"], event["cause"]) == (
        "notifications.events",
        order,
        cause.event_id,
    )
    assert str(event["notification_id"]) == row.notification_id
    assert str(event["order_id"]) == order
    assert (event["customer_id"], event["order_status"]) == ("cust-7", status)
    assert event["message"] == row.message


@pytest.mark.parametrize("second", [completed, rejected, cancelled])
async def test_a_second_terminal_event_for_the_order_is_ignored(notifications, second):
    order = new_order()
    await notifications.deliver(completed(order))
    await notifications.deliver(second(order))

    (row,) = await notifications.rows(order)
    assert row.order_status == "COMPLETED"
    assert [e["order_status"] for e in await notifications.emitted()] == ["COMPLETED"]


async def test_a_redelivered_terminal_event_notifies_once(notifications):
    order = new_order()
    event = cancelled(order)
    env = await notifications.deliver(event)
    await notifications.deliver(event, event_id=env.event_id)

    assert len(await notifications.rows(order)) == 1
    assert len(await notifications.emitted()) == 1


async def test_each_order_gets_its_own_notification(notifications):
    orders = [new_order() for _ in range(3)]
    for order, (make, _, _) in zip(orders, TERMINAL, strict=True):
        await notifications.deliver(make(order))

    emitted = await notifications.emitted()
    assert [e["key"] for e in emitted] == orders
    assert [e["order_status"] for e in emitted] == ["COMPLETED", "REJECTED", "CANCELLED"]
    assert len({e["notification_id"] for e in emitted}) == 3


async def test_a_cancellation_without_a_reason_reads_well(notifications):
    order = new_order()
    await notifications.deliver(cancelled(order, reason=""))

    (row,) = await notifications.rows(order)
    assert row.message == f"Your order {order} was cancelled."


# --- HTTP read side ------------------------------------------------------------------------


@pytest.fixture
async def client(db, codec, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(var_dir=tmp_path, http_port=0)
    outbox = Outbox(codec, "notifications")
    relay = OutboxRelay(db, "127.0.0.1:9")  # never started: the API does not publish
    ctx = ServiceContext("notifications", settings, db, codec, outbox, relay)
    transport = httpx.ASGITransport(app=build_app(SERVICE, ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as http:
        yield http


async def test_get_notification_shows_what_the_customer_was_told(notifications, client):
    order = new_order()
    await notifications.deliver(rejected(order))
    (row,) = await notifications.rows(order)

    resp = await client.get(f"/api/v1/notifications/{order}")
    assert resp.status_code == 200
    assert resp.json() == {
        "order_id": order,
        "notification_id": row.notification_id,
        "order_status": "REJECTED",
        "message": row.message,
    }


async def test_get_notification_for_an_unknown_order_is_404_json(client):
    order = new_order()
    resp = await client.get(f"/api/v1/notifications/{order}")
    assert resp.status_code == 404
    assert resp.json() == {"detail": f"no notification for order {order}"}


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "%00", "x" * 300])
async def test_get_notification_with_a_bad_id_is_422(client, bad):
    resp = await client.get(f"/api/v1/notifications/{bad}")
    assert resp.status_code == 422
    assert resp.json()["detail"]


def test_the_service_consumes_the_topics_of_its_handled_events(codec):
    assert set(router.handlers) == {"OrderCompleted", "OrderRejected", "OrderCancelled"}
    assert set(SERVICE.topics) == {codec.catalogue.topic_for(t) for t in router.handlers}
    assert Settings.model_fields["http_port"].default == 8105
