"""Notifications' reactions: one message per order when the order reaches its end. The
decisions are the domain's (``services.notifications.domain``), the statements the
repository's."""

from __future__ import annotations

import uuid
from typing import Any

from events.envelope import Event, utcnow
from events.outbox import UnitOfWork
from events.routing import Router
from schemas.models import CustomerNotified, OrderCancelled, OrderCompleted, OrderRejected
from services.notifications import domain
from services.notifications.domain import OrderStatus, Outcome
from services.notifications.repository import NotificationsRepository

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


async def _notify(uow: UnitOfWork, event: Event[Any], outcome: Outcome) -> None:
    repo = NotificationsRepository(uow.session)
    already = await repo.notified(outcome.order_id)
    note = domain.notify(outcome, already, notification_id=str(uuid.uuid4()))
    if note is None:
        return
    now = utcnow()
    await repo.insert(note, event.event_id, now)
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
