"""Shipping's read side: where an order's shipment stands."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel
from sqlalchemy import select

from events.service import ServiceContext
from services.shipping.domain import Status
from services.shipping.tables import shipments


class ShipmentView(BaseModel):
    order_id: str
    shipment_id: str
    status: str
    carrier: str | None  # none when the shipment failed


class NotFound(BaseModel):
    detail: str


def api(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["shipping"])

    @router.get("/shipments/{order_id}", responses={404: {"model": NotFound}})
    async def get_shipment(order_id: UUID) -> ShipmentView:
        query = select(shipments).where(shipments.c.order_id == str(order_id))
        async with ctx.db.session() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise HTTPException(404, detail=f"no shipment for order {order_id}")
        if row.status == Status.TOMBSTONE:
            # Only a marker that stops a late payment from shipping; there is no shipment.
            raise HTTPException(
                404, detail=f"no shipment for order {order_id}: cancelled before shipping"
            )
        return ShipmentView(
            order_id=row.order_id,
            shipment_id=row.shipment_id,
            status=row.status,
            carrier=row.carrier,
        )

    return router
