"""Shipping's reactions to the saga: ship paid orders; cancel, or tombstone, cancelled ones.

Statements are built once, at import, with ``bindparam`` placeholders: building one per call
(construction, coercion, cache key) costs about as much CPU as executing it. An UPDATE's
WHERE placeholder is named ``b_<column>``: SQLAlchemy keeps the column names for its SET.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.prepared import Prepared
from events.routing import PermanentError, Router
from schemas.models import (
    OrderCancelled,
    PaymentCaptured,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
)
from services.shipping import domain
from services.shipping.domain import Shipment, Status
from services.shipping.tables import shipments


def build_router(supported: frozenset[str]) -> Router:
    """The handlers, bound to the countries this deployment delivers to."""
    router = Router()

    @router.on(PaymentCaptured)
    async def on_payment_captured(uow: UnitOfWork, event: Event[PaymentCaptured]) -> None:
        paid = event.payload
        shipment = domain.on_payment_captured(
            await _load(uow, paid.order_id),
            order_id=paid.order_id,
            country=paid.shipping_address.country,
            postal_code=paid.shipping_address.postal_code,
            supported=supported,
            shipment_id=str(uuid.uuid4()),
        )
        if shipment is None:
            return
        now = utcnow()
        address = paid.shipping_address.model_dump_json()
        await _save(uow, shipment, None, paid.customer_id, now, address)
        _announce(uow, shipment, paid, now)

    @router.on(OrderCancelled)
    async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
        cancelled = event.payload
        current = await _load(uow, cancelled.order_id)
        after = domain.on_order_cancelled(
            current, order_id=cancelled.order_id, reason=cancelled.reason
        )
        if after is None:
            return
        now = utcnow()
        await _save(uow, after, current, cancelled.customer_id, now)
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


def _announce(uow: UnitOfWork, shipment: Shipment, paid: PaymentCaptured, now: datetime) -> None:
    match shipment:
        case Shipment(status=Status.SCHEDULED, shipment_id=str(shipment_id), carrier=str(carrier)):
            uow.emit(
                ShipmentScheduled(
                    order_id=paid.order_id,
                    customer_id=paid.customer_id,
                    shipment_id=shipment_id,
                    carrier=carrier,
                    shipping_address=paid.shipping_address,
                    scheduled_at=now,
                ),
                key=paid.order_id,
            )
        case Shipment(status=Status.FAILED, reason=str(reason)):
            uow.emit(
                ShipmentFailed(
                    order_id=paid.order_id,
                    customer_id=paid.customer_id,
                    reason=reason,
                    failed_at=now,
                ),
                key=paid.order_id,
            )
        case _:
            # The rules never produce this for a payment; fail loudly rather than go silent.
            raise PermanentError(f"no event for shipment state {shipment}")


# FOR UPDATE (a no-op on SQLite, which locks the whole file) serialises a capture and a
# cancellation of one order handled by two consumers on PostgreSQL.
_LOAD = Prepared(
    select(shipments).where(shipments.c.order_id == bindparam("order_id")).with_for_update()
)


async def _load(uow: UnitOfWork, order_id: str) -> Shipment | None:
    row = await _LOAD.first(uow.session, {"order_id": order_id})
    if row is None:
        return None
    return Shipment(
        row["order_id"], Status(row["status"]), row["shipment_id"], row["carrier"], row["reason"]
    )


_INSERT = Prepared(insert(shipments))
_UPDATE = Prepared(
    update(shipments)
    .where(shipments.c.order_id == bindparam("b_order_id"))
    .values(
        status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("updated_at")
    )
)


async def _save(
    uow: UnitOfWork,
    shipment: Shipment,
    before: Shipment | None,
    customer_id: str,
    now: datetime,
    address: str | None = None,
) -> None:
    if before is not None:
        await _UPDATE.run(
            uow.session,
            {
                "b_order_id": shipment.order_id,
                "status": shipment.status.value,
                "reason": shipment.reason,
                "updated_at": now,
            },
        )
        return
    await _INSERT.run(
        uow.session,
        {
            "order_id": shipment.order_id,
            "customer_id": customer_id,
            "status": shipment.status.value,
            "shipment_id": shipment.shipment_id,
            "carrier": shipment.carrier,
            "reason": shipment.reason,
            "address": address,
            "created_at": now,
            "updated_at": now,
        },
    )
