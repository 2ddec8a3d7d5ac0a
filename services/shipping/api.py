"""Shipping's read side: where an order's shipment stands."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from events.auth import OPERATOR_READ, requires
from events.http_reads import NOT_FOUND, read_or_404
from events.service import ServiceContext
from services.shipping.domain import Status
from services.shipping.repository import ShippingRepository


class ShipmentView(BaseModel):
    order_id: str
    shipment_id: str
    status: str
    carrier: str | None  # none when the shipment failed


def api(ctx: ServiceContext) -> APIRouter:
    # Operator reads only: a customer sees their order through orders and query.
    router = APIRouter(tags=["shipping"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get("/shipments/{order_id}", responses=NOT_FOUND)
    async def get_shipment(order_id: UUID) -> ShipmentView:
        row = await read_or_404(
            ctx.db,
            lambda s: ShippingRepository(s).get(str(order_id)),
            f"no shipment for order {order_id}",
        )
        if row["status"] == Status.TOMBSTONE:
            # Only a marker that stops a late payment from shipping; there is no shipment.
            raise HTTPException(
                404, detail=f"no shipment for order {order_id}: cancelled before shipping"
            )
        return ShipmentView.model_validate(row)

    return router
