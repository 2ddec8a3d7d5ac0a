"""The inventory HTTP API: stock levels and prices per SKU and reservations per order (read
only)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from events.auth import OPERATOR_READ, requires
from events.http_input import STORABLE_TEXT
from events.http_reads import read_or_404
from events.service import ServiceContext
from schemas.models import StockLine
from services.inventory.repository import InventoryRepository

Sku = Annotated[
    str,
    Path(min_length=1, max_length=255, pattern=STORABLE_TEXT, description="The stock keeping unit"),
]
OrderId = Annotated[uuid.UUID, Path(description="The order id (a UUID)")]


class StockView(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    shipped: int
    received: int
    unit_price_cents: int | None = Field(
        description="The SKU's unit price (set by a restock); null until one names a price"
    )


class ReservationView(BaseModel):
    order_id: str
    status: str
    lines: list[StockLine]


def api(ctx: ServiceContext) -> APIRouter:
    # Operator reads only: a customer sees their order through orders and query.
    router = APIRouter(tags=["inventory"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get("/stock/{sku}", response_model=StockView)
    async def get_stock(sku: Sku) -> StockView:
        async def read(s: AsyncSession) -> dict[str, Any] | None:
            repo = InventoryRepository(s)
            row = await repo.stock(sku)
            return None if row is None else {**row, "unit_price_cents": await repo.price(sku)}

        return StockView.model_validate(await read_or_404(ctx.db, read, f"sku {sku} not found"))

    @router.get("/reservations/{order_id}", response_model=ReservationView)
    async def get_reservation(order_id: OrderId) -> ReservationView:
        row = await read_or_404(
            ctx.db,
            lambda s: InventoryRepository(s).reservation_row(str(order_id)),
            f"no reservation for order {order_id}",
        )
        return ReservationView(
            order_id=row["order_id"], status=row["status"], lines=json.loads(row["lines"])
        )

    return router
