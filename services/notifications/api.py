"""Notifications' read side: what an order's customer was told."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import select

from events.service import ServiceContext
from services.notifications.tables import sent


class NotificationView(BaseModel):
    order_id: str
    notification_id: str
    order_status: str
    message: str


class NotFound(BaseModel):
    detail: str


def api(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["notifications"])

    @router.get("/notifications/{order_id}", responses={404: {"model": NotFound}})
    async def get_notification(order_id: UUID) -> NotificationView:
        query = select(sent).where(sent.c.order_id == str(order_id))
        async with ctx.db.session() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise HTTPException(404, detail=f"no notification for order {order_id}")
        return NotificationView(
            order_id=row.order_id,
            notification_id=row.notification_id,
            order_status=row.order_status,
            message=row.message,
        )

    return router
