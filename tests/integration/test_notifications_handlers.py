"""Notifications' handlers against a real SQLite database: one notification per order.

The handlers are called directly, each in its own unit of work, as the consumer runtime
would; no broker is needed. Every test uses fresh random order ids.
"""

from __future__ import annotations

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
from schemas.models import OrderCancelled, OrderCompleted, OrderRejected
from services.notifications.app import SERVICE, Settings
from services.notifications.handlers import router
from services.notifications.tables import sent
from tests.integration.service_kit import deliver, http_client, outbox_records, service_fixture

pytestmark = pytest.mark.integration

notifications = service_fixture(SERVICE, Settings, name="notifications")


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(Catalogue.load())


async def sent_rows(ctx: ServiceContext, order_id: str) -> list[Any]:
    async with ctx.db.session() as session:
        query = select(sent).where(sent.c.order_id == order_id)
        return list((await session.execute(query)).all())


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
    cause = await deliver(notifications, make(order))

    (row,) = await sent_rows(notifications, order)
    assert (row.order_status, row.customer_id, row.cause_event_id) == (
        status,
        "cust-7",
        cause.event_id,
    )
    assert text in row.message
    assert order in row.message
    (event,) = await outbox_records(notifications)
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
    await deliver(notifications, completed(order))
    await deliver(notifications, second(order))

    (row,) = await sent_rows(notifications, order)
    assert row.order_status == "COMPLETED"
    assert [e["order_status"] for e in await outbox_records(notifications)] == ["COMPLETED"]


async def test_a_redelivered_terminal_event_notifies_once(notifications):
    order = new_order()
    event = cancelled(order)
    env = await deliver(notifications, event)
    await deliver(notifications, event, event_id=env.event_id)

    assert len(await sent_rows(notifications, order)) == 1
    assert len(await outbox_records(notifications)) == 1


async def test_each_order_gets_its_own_notification(notifications):
    orders = [new_order() for _ in range(3)]
    for order, (make, _, _) in zip(orders, TERMINAL, strict=True):
        await deliver(notifications, make(order))

    emitted = await outbox_records(notifications)
    assert [e["key"] for e in emitted] == orders
    assert [e["order_status"] for e in emitted] == ["COMPLETED", "REJECTED", "CANCELLED"]
    assert len({e["notification_id"] for e in emitted}) == 3


async def test_a_cancellation_without_a_reason_reads_well(notifications):
    order = new_order()
    await deliver(notifications, cancelled(order, reason=""))

    (row,) = await sent_rows(notifications, order)
    assert row.message == f"Your order {order} was cancelled."


# --- HTTP read side ------------------------------------------------------------------------


@pytest.fixture
async def client(notifications) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(notifications) as http:
        yield http


async def test_get_notification_shows_what_the_customer_was_told(notifications, client):
    order = new_order()
    await deliver(notifications, rejected(order))
    (row,) = await sent_rows(notifications, order)

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
