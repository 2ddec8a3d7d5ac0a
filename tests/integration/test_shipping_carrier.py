"""Shipping calling the real carrier stand-in (its own process and database): a captured
payment books a shipment (the booking id is the shipment's), the carrier's refusal becomes
ShipmentFailed with its reason, a lost answer is retried under the same key and books once,
a booking whose transaction never committed is not booked twice, cancellations cancel the
booking, and a cancellation that won the race leaves no live booking.

Shipping's handlers run in this process, each event in its own unit of work as the consumer
runs them (tests.integration.service_kit).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from events.dependency import DependencyUnavailable
from events.envelope import utcnow
from events.service import Service, ServiceContext
from schemas.models import (
    Address,
    OrderCancelled,
    PaymentCaptured,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from services.shipping.app import NAME, Settings
from services.shipping.carrier import Carrier
from services.shipping.domain import idempotency_key
from services.shipping.handlers import build_router
from services.shipping.tables import carrier_calls, metadata, shipments
from tests.integration.dependency_kit import Recorder, StandIn, calling, standin
from tests.integration.service_kit import deliver, emitted, handled_not_committed

pytestmark = pytest.mark.integration


@pytest.fixture
async def carrier(tmp_path: Path, database_url: Callable[[str], str]) -> AsyncIterator[StandIn]:
    async with standin("carrier", tmp_path, database_url, CARRIER_COUNTRIES="DE,FR") as running:
        yield running


def shipping_with(
    carrier: StandIn,
    tmp_path: Path,
    database_url: Callable[[str], str],
    recorder: Recorder | None = None,
    **client: Any,
) -> contextlib.AbstractAsyncContextManager[tuple[ServiceContext, Recorder]]:
    """Shipping's handlers over a fresh database, calling ``carrier`` through ``recorder``.
    Its own countries are none: every decision must come from the carrier."""

    def service(client_of: Carrier) -> Service:
        router = build_router(frozenset(), client_of)
        return Service(NAME, metadata, router, ["payments.events", "orders.events"])

    url = database_url("shipping")
    return calling(carrier, Carrier, service, Settings, tmp_path, url, recorder, **client)


@pytest.fixture
async def shipping(
    carrier: StandIn, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[tuple[ServiceContext, Recorder]]:
    async with shipping_with(carrier, tmp_path, database_url) as pair:
        yield pair


def captured(country: str = "DE", postal_code: str = "10115") -> PaymentCaptured:
    address = Address(
        name="Ada", line1="Hauptstr. 1", city="Berlin", postal_code=postal_code, country=country
    )
    return PaymentCaptured(
        order_id=str(uuid.uuid4()),
        customer_id="cust-1",
        payment_id=str(uuid.uuid4()),
        amount_cents=4_200,
        shipping_address=address,
        captured_at=utcnow(),
    )


def cancelled(paid: PaymentCaptured) -> OrderCancelled:
    return OrderCancelled(
        order_id=paid.order_id,
        customer_id=paid.customer_id,
        reason="customer asked",
        failed_step=None,
        cancelled_at=utcnow(),
    )


async def bookings(carrier: StandIn, order_id: str) -> list[tuple[str, str]]:
    """(booking id, status) of the carrier's bookings for the order."""
    listed = await carrier.get(f"/v1/bookings?reference={order_id}")
    return [(b["booking_id"], b["status"]) for b in listed["bookings"]]


async def shipment(ctx: ServiceContext, order_id: str) -> dict[str, Any] | None:
    async with ctx.db.session() as s:
        query = select(shipments).where(shipments.c.order_id == order_id)
        row = (await s.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def calls(ctx: ServiceContext, order_id: str) -> dict[str, tuple[str, int]]:
    """operation -> (idempotency key, carrier status) of the calls stored for the order."""
    async with ctx.db.session() as s:
        query = select(carrier_calls).where(carrier_calls.c.order_id == order_id)
        rows = (await s.execute(query)).mappings().all()
    return {r["operation"]: (r["idempotency_key"], r["status"]) for r in rows}


async def test_a_captured_payment_is_booked_with_the_carrier(shipping, carrier):
    ctx, _ = shipping
    paid = captured("FR", "75001")
    await deliver(ctx, paid)

    ((booking_id, status),) = await bookings(carrier, paid.order_id)
    assert status == "booked"
    row = await shipment(ctx, paid.order_id)
    assert row is not None
    assert (row["status"], row["shipment_id"], row["carrier"]) == (
        "SCHEDULED",
        booking_id,
        "colissimo",
    )
    ((_, event),) = await emitted(ctx)
    assert isinstance(event, ShipmentScheduled)
    assert (event.shipment_id, event.carrier) == (booking_id, "colissimo")
    assert await calls(ctx, paid.order_id) == {
        "book": (idempotency_key("book", paid.order_id), 201)
    }


async def test_the_carriers_refusal_becomes_shipment_failed_with_its_reason(shipping, carrier):
    ctx, _ = shipping
    paid = captured("US", "10001")  # the carrier serves DE and FR only
    await deliver(ctx, paid)

    ((_, event),) = await emitted(ctx)
    assert isinstance(event, ShipmentFailed)
    assert "US" in event.reason
    row = await shipment(ctx, paid.order_id)
    assert row is not None and (row["status"], row["reason"]) == ("FAILED", event.reason)
    assert await bookings(carrier, paid.order_id) == []


async def test_a_booking_answer_lost_after_the_carrier_booked_books_once(
    carrier, tmp_path, database_url
):
    lossy = Recorder(lose_after="/v1/bookings")
    async with shipping_with(carrier, tmp_path, database_url, lossy) as (ctx, recorder):
        paid = captured()
        await deliver(ctx, paid)

        first, second = recorder.to("/v1/bookings")
        assert first.idempotency_key == second.idempotency_key
        assert (first.status, second.status, second.replayed) == (201, 201, True)
        assert len(await bookings(carrier, paid.order_id)) == 1
        assert [type(e) for _, e in await emitted(ctx)] == [ShipmentScheduled]


async def test_a_booking_whose_transaction_never_committed_is_not_booked_twice(shipping, carrier):
    ctx, recorder = shipping
    paid = captured()
    await handled_not_committed(ctx, paid)
    assert await shipment(ctx, paid.order_id) is None
    await deliver(ctx, paid)

    ((booking_id, _),) = await bookings(carrier, paid.order_id)
    row = await shipment(ctx, paid.order_id)
    assert row is not None and row["shipment_id"] == booking_id
    assert [s.replayed for s in recorder.seen] == [False, True]


async def test_a_cancelled_order_cancels_its_booking_once(shipping, carrier):
    ctx, recorder = shipping
    paid = captured()
    await deliver(ctx, paid)
    await deliver(ctx, cancelled(paid))
    await deliver(ctx, cancelled(paid))  # cancelled already: nothing more

    ((_, status),) = await bookings(carrier, paid.order_id)
    assert status == "cancelled"
    assert [type(e) for _, e in await emitted(ctx)] == [ShipmentScheduled, ShipmentCancelled]
    assert len(recorder.to("/cancel")) == 1


async def test_a_cancellation_that_won_over_an_uncommitted_booking_leaves_none_live(
    shipping, carrier
):
    ctx, _ = shipping
    paid = captured()
    await handled_not_committed(ctx, paid)  # booked at the carrier, unknown here
    await deliver(ctx, cancelled(paid))  # a tombstone
    await deliver(ctx, paid)  # resolved through the carrier, not skipped

    ((_, status),) = await bookings(carrier, paid.order_id)
    assert status == "cancelled"
    assert await emitted(ctx) == []
    row = await shipment(ctx, paid.order_id)
    assert row is not None and row["status"] == "TOMBSTONE"


async def test_while_the_carrier_is_down_the_event_is_unavailable_and_nothing_is_kept(
    shipping, carrier
):
    ctx, _ = shipping
    await carrier.faults(down=True)
    paid = captured()
    with pytest.raises(DependencyUnavailable) as raised:
        await deliver(ctx, paid)
    assert raised.value.dependency == "carrier"
    assert await shipment(ctx, paid.order_id) is None
    assert await emitted(ctx) == []
