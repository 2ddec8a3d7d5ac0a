"""The orders HTTP API: place, read and cancel orders."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from events.auth import (
    OPERATOR_READ,
    OPERATOR_WRITE,
    ORDERS_READ,
    ORDERS_WRITE,
    Caller,
    not_found,
    requires,
)
from events.http_input import STORABLE_TEXT
from events.http_reads import read_or_404
from events.service import ServiceContext
from events.telemetry import saga_span
from schemas.models import MAX_LINES, Address, Id, Quantity, UnitPrice, ValidUnicode
from services.orders.domain import Fact, PricingRefused, Requested, Status
from services.orders.handlers import NewOrder, apply_fact, place_order
from services.orders.repository import OrdersRepository

OrderId = Annotated[uuid.UUID, Path(description="The order id (a UUID)")]
Sku = Annotated[
    str,
    Path(min_length=1, max_length=255, pattern=STORABLE_TEXT, description="The stock keeping unit"),
]
Reader = Annotated[Caller, Depends(requires(ORDERS_READ, OPERATOR_READ))]
Writer = Annotated[Caller, Depends(requires(ORDERS_WRITE, OPERATOR_WRITE))]


class LineRequest(BaseModel):
    """One line of an order to place. Prices come from the platform (inventory sets them
    with the stock): a line may leave ``unit_price_cents`` out; one that sends it must send
    the platform's current price, else 422 (so that a customer is never charged a price it
    was not shown)."""

    model_config = ConfigDict(extra="forbid")

    sku: Id
    quantity: Quantity
    unit_price_cents: UnitPrice | None = Field(
        default=None,
        description="Optional: the unit price the customer was shown; it must equal the "
        "platform's (GET /api/v1/prices/{sku}), else 422",
    )


class PriceView(BaseModel):
    sku: str
    unit_price_cents: int
    priced_at: str


class PlaceOrder(BaseModel):
    """Bounded like the events it becomes (``schemas.models``): whatever passes, every
    event of its saga can be published and its total cannot overflow."""

    order_id: uuid.UUID | None = Field(default=None, description="Chosen by the client for retries")
    customer_id: Id
    lines: list[LineRequest] = Field(min_length=1, max_length=MAX_LINES)
    shipping_address: Address


class CancelOrder(BaseModel):
    reason: Annotated[str, Field(max_length=500), ValidUnicode] = "cancelled by the customer"


class OrderView(BaseModel):
    order_id: str
    customer_id: str
    status: str
    total_cents: int
    lines: list[dict[str, Any]]
    shipping_address: dict[str, Any]
    reason: str | None
    failed_step: str | None
    shipment_id: str | None
    created_at: str
    updated_at: str
    deadline_at: str = Field(description="When the saga should have ended")
    waiting_on: str | None = Field(description="The step a pending order waits on")
    waiting_since: str | None
    stuck_at: str | None = Field(description="When the watchdog found it stuck at that step")


def _view(row: Any) -> OrderView:
    return OrderView(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        status=row["status"],
        total_cents=row["total_cents"],
        lines=json.loads(row["lines"]),
        shipping_address=json.loads(row["shipping_address"]),
        reason=row["reason"],
        failed_step=row["failed_step"],
        shipment_id=row["shipment_id"],
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
        deadline_at=str(row["deadline_at"]),
        waiting_on=row["waiting_on"],
        waiting_since=_maybe_str(row["waiting_since"]),
        stuck_at=_maybe_str(row["stuck_at"]),
    )


def _maybe_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _pricing_errors(refused: PricingRefused) -> list[dict[str, Any]]:
    """A 422's detail in FastAPI's shape: one entry per line the platform cannot price."""
    field = {"unknown_sku": "sku", "price_mismatch": "unit_price_cents"}
    return [
        {"loc": ["body", "lines", p.line, field[p.kind]], "msg": p.message, "type": p.kind}
        for p in refused.problems
    ]


def _same_order(sent: PlaceOrder, stored: OrderView) -> bool:
    """The order sent again is the stored one: same customer, and each line and the address
    have the values the client sent (fields the platform fills in are not compared)."""

    def agrees(given: dict[str, Any], kept: dict[str, Any]) -> bool:
        return all(kept.get(name) == value for name, value in given.items())

    lines = [line.model_dump(mode="json", exclude_unset=True) for line in sent.lines]
    address = sent.shipping_address.model_dump(mode="json", exclude_unset=True)
    return (
        sent.customer_id == stored.customer_id
        and len(lines) == len(stored.lines)
        and all(agrees(given, kept) for given, kept in zip(lines, stored.lines, strict=True))
        and agrees(address, stored.shipping_address)
    )


def api(ctx: ServiceContext, saga_deadline: timedelta) -> APIRouter:
    router = APIRouter(tags=["orders"])

    async def load(order_id: str) -> OrderView:
        row = await read_or_404(
            ctx.db, lambda s: OrdersRepository(s).get(order_id), f"order {order_id} not found"
        )
        return _view(row)

    async def load_for(order_id: str, caller: Caller) -> OrderView:
        view = await load(order_id)
        if not caller.may_read(view.customer_id):
            raise not_found(f"order {order_id}")  # another customer's: as if it did not exist
        return view

    @router.post("/orders", status_code=201, response_model=OrderView)
    async def place(body: PlaceOrder, response: Response, caller: Writer) -> OrderView:
        """Places an order priced by the platform (inventory's price per SKU): a line may
        leave ``unit_price_cents`` out; a sent price must be the platform's. A 422 names each
        line that cannot be priced (``type``: ``unknown_sku`` or ``price_mismatch``, with
        both prices in ``msg``); nothing is written then."""
        if not caller.may_act_for(body.customer_id):
            raise HTTPException(403, "a customer's token places orders for that customer only")
        order_id = str(body.order_id or uuid.uuid4())
        order = NewOrder(
            order_id,
            body.customer_id,
            [Requested(ln.sku, ln.quantity, ln.unit_price_cents) for ln in body.lines],
            body.shipping_address,
        )
        # The saga starts here, inside the request's server span (in the client's trace when
        # it sent a traceparent); every event it causes carries this trace.
        with saga_span("place order", {"choreo.order_id": order_id}):
            try:
                async with ctx.uow() as uow:
                    try:
                        created = await place_order(uow, order, saga_deadline)
                    except PricingRefused as exc:  # nothing was written
                        raise HTTPException(422, _pricing_errors(exc)) from None
                    await uow.commit()
            except IntegrityError:
                # The same id placed by a request at the same moment (PostgreSQL: both found
                # none and inserted): that one created it, this one is a retry of it.
                async with ctx.db.session() as s:
                    if not await OrdersRepository(s).exists(order_id):
                        raise
                created = False
        view = await load(order_id)
        if not created:
            if not _same_order(body, view):
                raise HTTPException(
                    409, f"order {order_id} exists with another customer, lines or address"
                )
            response.status_code = 200  # the same order again (a retry): idempotent
        return view

    # Customers see the prices they will be charged; so do operators.
    @router.get(
        "/prices/{sku}",
        response_model=PriceView,
        dependencies=[Depends(requires(ORDERS_READ, ORDERS_WRITE, OPERATOR_READ))],
    )
    async def get_price(sku: Sku) -> PriceView:
        """The unit price orders charges for ``sku`` now (its replica of inventory's)."""
        row = await read_or_404(
            ctx.db, lambda s: OrdersRepository(s).price(sku), f"sku {sku} has no price"
        )
        cents, at = row["unit_price_cents"], str(row["priced_at"])
        return PriceView(sku=row["sku"], unit_price_cents=cents, priced_at=at)

    @router.get("/orders/{order_id}", response_model=OrderView)
    async def get_order(order_id: OrderId, caller: Reader) -> OrderView:
        return await load_for(str(order_id), caller)

    @router.get("/orders", response_model=list[OrderView])
    async def list_orders(
        status: Annotated[Status | None, Query()] = None,
        customer_id: Annotated[str | None, Query(max_length=255, pattern=STORABLE_TEXT)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        *,
        caller: Reader,
    ) -> list[OrderView]:
        if not caller.has(OPERATOR_READ):
            if customer_id not in (None, caller.subject):
                return []  # another customer's orders: none to see
            customer_id = caller.subject
        async with ctx.db.session() as s:
            rows = await OrdersRepository(s).listing(status, customer_id, limit)
        return [_view(r) for r in rows]

    @router.get("/orders-summary", dependencies=[Depends(requires(OPERATOR_READ))])
    async def summary() -> dict[str, int]:
        async with ctx.db.session() as s:
            return await OrdersRepository(s).count_by_status()

    @router.post("/orders/{order_id}/cancel", response_model=OrderView)
    async def cancel(
        order_id: OrderId, caller: Writer, body: CancelOrder | None = None
    ) -> OrderView:
        view = await load(str(order_id))  # 404 before any write
        if not caller.may_act_for(view.customer_id):
            raise not_found(f"order {order_id}")
        reason = (body or CancelOrder()).reason
        async with ctx.uow() as uow:
            await apply_fact(uow, str(order_id), Fact.CANCEL_REQUESTED, reason)
            await uow.commit()
        return await load(str(order_id))

    return router
