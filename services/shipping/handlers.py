"""Shipping's reactions to the saga: ship paid orders; cancel, or tombstone, cancelled ones.
The decisions are the domain's (``services.shipping.domain``), or with a carrier
(``services.shipping.carrier``) the carrier's booking or refusal; the statements are the
repository's."""

from __future__ import annotations

import uuid
from datetime import datetime

from events.envelope import Event, utcnow
from events.models import EventModel
from events.outbox import UnitOfWork
from events.routing import PermanentError, Router
from schemas.models import (
    OrderCancelled,
    PaymentCaptured,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from services.shipping import domain
from services.shipping.carrier import Booked, Carrier
from services.shipping.domain import Shipment, Status
from services.shipping.repository import ShippingRepository


def build_router(supported: frozenset[str], carrier: Carrier | None = None) -> Router:
    """The handlers: with ``carrier`` it books and cancels shipments and decides where it
    delivers; without, shipping decides from the countries this deployment delivers to."""
    router = Router()

    async def decide(
        repo: ShippingRepository, current: Shipment | None, paid: PaymentCaptured
    ) -> Shipment | None:
        if carrier is None:
            return domain.on_payment_captured(
                current,
                order_id=paid.order_id,
                country=paid.shipping_address.country,
                postal_code=paid.shipping_address.postal_code,
                supported=supported,
                shipment_id=str(uuid.uuid4()),
            )
        if current is not None:
            if current.status is Status.TOMBSTONE:
                await carrier.settle_cancelled(repo, paid.order_id, paid.shipping_address)
            return None  # tombstoned (cancelled first) or decided: never a second booking
        answer = await carrier.book(repo, paid.order_id, paid.shipping_address)
        if isinstance(answer, Booked):
            return domain.booked(
                current,
                order_id=paid.order_id,
                booking_id=answer.booking_id,
                carrier=answer.carrier,
            )
        return domain.undeliverable(
            current, order_id=paid.order_id, shipment_id=str(uuid.uuid4()), reason=answer.reason
        )

    @router.on(PaymentCaptured)
    async def on_payment_captured(uow: UnitOfWork, event: Event[PaymentCaptured]) -> None:
        paid, now = event.payload, utcnow()
        repo = ShippingRepository(uow.session)
        shipment = await decide(repo, await repo.lock(paid.order_id), paid)
        if shipment is not None:
            address = paid.shipping_address.model_dump_json()
            await repo.insert(shipment, paid.customer_id, address, now)
            uow.emit(_announcement(shipment, paid, now), key=paid.order_id)

    @router.on(OrderCancelled)
    async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
        cancelled, now = event.payload, utcnow()
        repo = ShippingRepository(uow.session)
        current = await repo.lock(cancelled.order_id)
        after = domain.on_order_cancelled(
            current, order_id=cancelled.order_id, reason=cancelled.reason
        )
        if after is None:
            return
        if carrier is not None and after.status is Status.CANCELLED:
            await carrier.cancel(repo, cancelled.order_id)
        if current is None:
            await repo.insert(after, cancelled.customer_id, None, now)  # a tombstone
        else:
            await repo.set_status(after, now)
        if after.status is Status.CANCELLED and after.shipment_id is not None:
            uow.emit(
                ShipmentCancelled(
                    order_id=after.order_id,
                    shipment_id=after.shipment_id,
                    reason=cancelled.reason,
                    cancelled_at=now,
                ),
                key=after.order_id,
            )

    return router


def _announcement(shipment: Shipment, paid: PaymentCaptured, now: datetime) -> EventModel:
    """What shipping says about a captured payment's shipment: scheduled, or why it failed."""
    order_id, customer_id = paid.order_id, paid.customer_id
    match shipment:
        case Shipment(status=Status.SCHEDULED, shipment_id=str(shipment_id), carrier=str(carrier)):
            address = paid.shipping_address
            return ShipmentScheduled(
                order_id=order_id,
                customer_id=customer_id,
                shipment_id=shipment_id,
                carrier=carrier,
                shipping_address=address,
                scheduled_at=now,
            )
        case Shipment(status=Status.FAILED, reason=str(reason)):
            return ShipmentFailed(
                order_id=order_id, customer_id=customer_id, reason=reason, failed_at=now
            )
        case _:
            # The rules never produce this for a payment; fail loudly rather than go silent.
            raise PermanentError(f"no event for shipment state {shipment}")
