"""The payments HTTP API: customer accounts and payments per order (read only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from events.auth import OPERATOR_READ, requires
from events.http_input import STORABLE_TEXT
from events.http_reads import read_or_404
from events.service import ServiceContext
from services.payments.repository import PaymentsRepository

CustomerId = Annotated[
    str, Path(min_length=1, max_length=255, pattern=STORABLE_TEXT, description="The customer id")
]
OrderId = Annotated[uuid.UUID, Path(description="The order id (a UUID)")]


class AccountView(BaseModel):
    customer_id: str
    balance_cents: int
    deposited_cents: int
    captured_cents: int
    refunded_cents: int


class PaymentView(BaseModel):
    order_id: str
    payment_id: str
    status: str
    amount_cents: int


def api(ctx: ServiceContext) -> APIRouter:
    # Operator reads only: a customer sees their order through orders and query.
    router = APIRouter(tags=["payments"], dependencies=[Depends(requires(OPERATOR_READ))])

    @router.get("/accounts/{customer_id}", response_model=AccountView)
    async def get_account(customer_id: CustomerId) -> AccountView:
        row = await read_or_404(
            ctx.db,
            lambda s: PaymentsRepository(s).account_row(customer_id),
            f"customer {customer_id} has no account",
        )
        return AccountView.model_validate(row)

    @router.get("/payments/{order_id}", response_model=PaymentView)
    async def get_payment(order_id: OrderId) -> PaymentView:
        row = await read_or_404(
            ctx.db,
            lambda s: PaymentsRepository(s).payment_row(str(order_id)),
            f"no payment for order {order_id}",
        )
        return PaymentView.model_validate(row)

    return router
