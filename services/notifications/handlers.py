"""Notifications' reactions: one message per order when the order reaches its end.

Statements are built once, at import, with ``bindparam`` placeholders: building one per call
(construction, coercion, cache key) costs about as much CPU as executing it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, insert, select

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.prepared import Prepared
from events.routing import Router
from schemas.models import CustomerNotified, OrderCancelled, OrderCompleted, OrderRejected
from services.notifications import domain
from services.notifications.domain import OrderStatus, Outcome
from services.notifications.tables import sent

router = Router()


@router.on(OrderCompleted)
async def on_order_completed(uow: UnitOfWork, event: Event[OrderCompleted]) -> None:
    p = event.payload
    outcome = Outcome(p.order_id, p.customer_id, OrderStatus.COMPLETED, p.shipment_id)
    await _notify(uow, event, outcome)


@router.on(OrderRejected)
async def on_order_rejected(uow: UnitOfWork, event: Event[OrderRejected]) -> None:
    p = event.payload
    await _notify(uow, event, Outcome(p.order_id, p.customer_id, OrderStatus.REJECTED, p.reason))


@router.on(OrderCancelled)
async def on_order_cancelled(uow: UnitOfWork, event: Event[OrderCancelled]) -> None:
    p = event.payload
    await _notify(uow, event, Outcome(p.order_id, p.customer_id, OrderStatus.CANCELLED, p.reason))


_ALREADY_SENT = Prepared(select(sent.c.order_id).where(sent.c.order_id == bindparam("order_id")))
_INSERT_SENT = Prepared(insert(sent))


async def _notify(uow: UnitOfWork, event: Event[Any], outcome: Outcome) -> None:
    already = await _ALREADY_SENT.first(uow.session, {"order_id": outcome.order_id}) is not None
    note = domain.notify(outcome, already, notification_id=str(uuid.uuid4()))
    if note is None:
        return
    now = utcnow()
    await _INSERT_SENT.run(
        uow.session,
        {
            "order_id": note.order_id,
            "notification_id": note.notification_id,
            "customer_id": note.customer_id,
            "order_status": note.order_status.value,
            "message": note.message,
            "cause_event_id": event.event_id,
            "notified_at": now,
        },
    )
    uow.emit(
        CustomerNotified(
            notification_id=note.notification_id,
            order_id=note.order_id,
            customer_id=note.customer_id,
            order_status=note.order_status.value,
            message=note.message,
            notified_at=now,
        ),
        key=note.order_id,
    )
