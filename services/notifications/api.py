"""Notifications' read side: what an order's customer was told."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from events.auth import OPERATOR_READ, requires
from events.http_reads import NOT_FOUND, read_or_404
from events.service import ServiceContext
from services.notifications.repository import NotificationsRepository


class NotificationView(BaseModel):
    order_id: str
    notification_id: str
    order_status: str
    message: str


def api(ctx: ServiceContext) -> APIRouter:
    # Operator reads only: a customer sees their order through orders and query.
    router = APIRouter(tags=["notifications"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get("/notifications/{order_id}", responses=NOT_FOUND)
    async def get_notification(order_id: UUID) -> NotificationView:
        row = await read_or_404(
            ctx.db,
            lambda s: NotificationsRepository(s).get(str(order_id)),
            f"no notification for order {order_id}",
        )
        return NotificationView.model_validate(row)

    return router
