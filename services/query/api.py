"""The read API: orders (stuck ones too), timelines, customers, SKUs, counts and the
projection's own state.

Every read endpoint takes ``min_position`` (read-your-writes): the caller passes the
``topic:partition:offset`` of what it published (or of an event it saw) and the read waits,
up to ``wait_ms``, until the projection has applied it; otherwise it answers 504.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from aiokafka import TopicPartition
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from events.auth import OPERATOR_READ, ORDERS_READ, Caller, not_found, requires
from events.http_input import STORABLE_TEXT
from events.projection import ProjectionRunner
from services.query.params import decode_cursor, parse_positions
from services.query.reads import NotStarted, Reads

MAX_WAIT_MS = 10_000

# A customer reads their own orders and customer view; operators read everything.
Reader = Annotated[Caller, Depends(requires(ORDERS_READ, OPERATOR_READ))]
OPERATOR = [Depends(requires(OPERATOR_READ))]

Status = Literal["PENDING", "COMPLETED", "REJECTED", "CANCELLED"]  # domain.ORDER_STATUSES


@dataclass
class ReadSide:
    """What the routes need: the live runner (positions, waits) and the reads."""

    runner: ProjectionRunner
    reads: Reads


# --- response bodies ------------------------------------------------------------------------


class Problem(BaseModel):
    detail: Any = Field(description="What is wrong, in words (or a list of field errors)")


class Line(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int


class StockLine(BaseModel):
    sku: str
    quantity: int


class StuckAt(BaseModel):
    """Where a pending order is stuck: orders' report that its saga passed the deadline."""

    waiting_on: str = Field(description="The step it waits on: inventory, payments or shipping")
    waiting_since: datetime = Field(description="When the order reached that step")
    deadline_at: datetime = Field(description="When its saga should have ended")
    detected_at: datetime = Field(description="When orders found it overdue")


class Order(BaseModel):
    order_id: str
    customer_id: str | None
    status: Status
    total_cents: int
    lines: list[Line]
    created_at: datetime
    updated_at: datetime = Field(description="The latest occurred_at among the order's events")
    terminal_at: datetime | None
    reason: str | None = Field(description="Why the order was rejected or cancelled")
    failed_step: str | None = Field(description="inventory, payments or shipping")
    payment_id: str | None
    payment_status: str | None
    captured_cents: int | None
    refunded_cents: int | None
    shipment_id: str | None
    shipment_status: str | None
    carrier: str | None
    stock_status: str | None
    stock_lines: list[StockLine] | None
    notified_at: datetime | None
    stuck: StuckAt | None = Field(
        description="Set while the order is stuck (pending, not past the step it was reported "
        "stuck at); null otherwise, and once the order ended"
    )


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null at end")


class ByStatus(BaseModel):
    PENDING: int
    COMPLETED: int
    REJECTED: int
    CANCELLED: int


class Stats(BaseModel):
    by_status: ByStatus = Field(description="Orders per status (every status, 0 if none)")
    stuck: int = Field(description="Pending orders stuck now (as ?stuck=true lists them)")
    total: int = Field(description="Every order created")


class TimelineEvent(BaseModel):
    event_id: str
    event_type: str
    service: str = Field(description="The envelope's producer")
    occurred_at: datetime
    causation_id: str | None
    correlation_id: str
    trace_id: str | None = Field(description="From the W3C traceparent header, when present")
    topic: str
    partition: int
    offset: int


class Timeline(BaseModel):
    order_id: str
    ordering: str = Field(
        default="causal: every cause before its effects, otherwise by occurred_at, "
        "then event type and id"
    )
    events: list[TimelineEvent]


class Decline(BaseModel):
    declined_at: datetime
    balance_cents: int = Field(description="The balance payments reported when declining")
    event_id: str


class Customer(BaseModel):
    customer_id: str
    orders_count: int
    deposited_cents: int
    captured_cents: int
    refunded_cents: int
    balance_cents: int = Field(
        description="deposited - captured + refunded over every such event applied so far"
    )
    balance_as_of: datetime | None = Field(
        description="The latest time of those deposit, capture and refund events"
    )
    last_decline: Decline | None


class Sku(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    shipped: int
    received: int


class PartitionState(BaseModel):
    topic: str
    partition: int
    position: int = Field(description="The next offset the projection will apply")
    lag: int | None = Field(description="Messages not applied yet (null: end not known yet)")


class ProjectionState(BaseModel):
    name: str
    active_generation: int | None
    building_generation: int | None
    following_generation: int = Field(description="The generation the live runner feeds")
    started: bool
    caught_up: bool
    lag: int | None
    applied: int
    undecodable: int = Field(
        description="Messages of the serving generation no contract reads (skipped; counted "
        "in the database, so across restarts)"
    )
    dead_lettered: int = Field(
        description="Events of the serving generation that failed to apply and went to "
        "<topic>.dlq (counted in the database, so across restarts)"
    )
    advancing: bool = Field(description="False while the runner cannot apply what it reads")
    last_error: str | None = Field(description="Why it cannot advance (null while it does)")
    stalled_since: str | None = Field(description="Since when it cannot advance (UTC)")
    partitions: list[PartitionState]


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "Not found"},
    422: {"model": Problem, "description": "Bad parameters"},
    503: {"model": Problem, "description": "The projection is starting"},
    504: {"model": Problem, "description": "min_position not reached within wait_ms"},
}


# --- read-your-writes -------------------------------------------------------------------------


def _unprocessable(name: str, message: str) -> HTTPException:
    # The same shape as FastAPI's own validation errors.
    return HTTPException(422, [{"loc": ["query", name], "msg": message, "type": "value_error"}])


def consistency(side: ReadSide) -> Any:
    async def wait(
        min_position: Annotated[
            list[str] | None,
            Query(
                description="topic:partition:offset the read must reflect (repeatable or "
                "comma-separated); the read waits until the projection applied it",
            ),
        ] = None,
        wait_ms: Annotated[
            int, Query(ge=0, le=MAX_WAIT_MS, description="How long to wait for min_position")
        ] = 2000,
    ) -> None:
        runner = side.runner
        try:
            wanted = parse_positions(min_position or ())
        except ValueError as exc:
            raise _unprocessable("min_position", str(exc)) from None
        if not wanted:
            return  # reads answer from the stored rows, also while the runner starts
        if not runner.started.is_set():
            raise HTTPException(503, "the projection is starting; retry shortly")
        known = set(runner.lag())
        positions = {TopicPartition(t, p): offset for (t, p), offset in wanted.items()}
        unknown = [f"{tp.topic}:{tp.partition}" for tp in positions if tp not in known]
        if unknown:
            message = f"not a partition this projection reads: {', '.join(sorted(unknown))}"
            raise _unprocessable("min_position", message)
        if not await runner.wait_for(positions, wait_ms / 1000):
            behind = {
                f"{tp.topic}:{tp.partition}": {
                    "wanted": offset,
                    "next": runner.positions.get(tp, 0),
                }
                for tp, offset in positions.items()
                if runner.positions.get(tp, 0) <= offset
            }
            raise HTTPException(
                504,
                {"message": f"min_position not applied within {wait_ms} ms", "behind": behind},
            )

    return wait


# --- routes -------------------------------------------------------------------------------------


def routes(side: ReadSide) -> APIRouter:
    router = APIRouter(tags=["read models"], responses=ERRORS)
    consistent = [Depends(consistency(side))]
    reads = side.reads

    def found(row: Any, what: str) -> Any:
        if row is None:
            raise HTTPException(404, f"{what} not found")
        return row

    @router.get("/orders/{order_id}", response_model=Order, dependencies=consistent)
    async def get_order(order_id: Annotated[uuid.UUID, Path()], caller: Reader) -> Any:
        order = found(await reads.order(str(order_id)), f"order {order_id}")
        if not caller.may_read(order["customer_id"]):
            raise not_found(f"order {order_id}")  # another customer's: as if none
        return order

    @router.get("/orders", response_model=OrderPage, dependencies=consistent)
    async def list_orders(
        status: Annotated[Status | None, Query()] = None,
        customer_id: Annotated[
            str | None, Query(min_length=1, max_length=255, pattern=STORABLE_TEXT)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None, Query(max_length=512, description="next_cursor of the previous page")
        ] = None,
        stuck: Annotated[
            bool | None,
            Query(description="true: only pending orders stuck now; false: all the others"),
        ] = None,
        newest_first: Annotated[
            bool, Query(description="Page from the newest order back (cursors keep the order)")
        ] = False,
        *,
        caller: Reader,
    ) -> Any:
        if not caller.has(OPERATOR_READ):
            if customer_id not in (None, caller.subject):
                return {"items": [], "next_cursor": None}  # another customer's: none to see
            customer_id = caller.subject
        try:
            after = decode_cursor(cursor, newest_first) if cursor is not None else None
        except ValueError as exc:
            raise _unprocessable("cursor", str(exc)) from None
        items, next_cursor = await reads.orders(
            status=status,
            customer_id=customer_id,
            limit=limit,
            after=after,
            stuck=stuck,
            newest_first=newest_first,
        )
        return {"items": items, "next_cursor": next_cursor}

    @router.get("/stats", response_model=Stats, dependencies=OPERATOR + consistent)
    async def get_stats() -> Any:
        return await reads.stats()

    @router.get(
        "/orders/{order_id}/timeline", response_model=Timeline, dependencies=OPERATOR + consistent
    )
    async def get_timeline(order_id: Annotated[uuid.UUID, Path()]) -> Any:
        events = await reads.timeline(str(order_id))
        found(events or None, f"events of order {order_id}")
        return {"order_id": str(order_id), "events": events}

    @router.get("/customers/{customer_id}", response_model=Customer, dependencies=consistent)
    async def get_customer(
        customer_id: Annotated[str, Path(max_length=255, pattern=STORABLE_TEXT)],
        caller: Reader,
    ) -> Any:
        if not caller.may_read(customer_id):
            raise not_found(f"customer {customer_id}")
        return found(await reads.customer(customer_id), f"customer {customer_id}")

    @router.get("/skus/{sku}", response_model=Sku, dependencies=OPERATOR + consistent)
    async def get_sku(sku: Annotated[str, Path(max_length=255, pattern=STORABLE_TEXT)]) -> Any:
        return found(await reads.sku(sku), f"SKU {sku}")

    @router.get(
        "/projections", response_model=list[ProjectionState], dependencies=OPERATOR + consistent
    )
    async def get_projections() -> Any:
        return [await projection_state(side)]

    return router


async def projection_state(side: ReadSide) -> dict[str, Any]:
    runner = side.runner
    started = runner.started.is_set()
    active, building = await side.reads.reader.state(runner.projection.name)
    lags = runner.lag() if started else {}
    known = [lag for lag in lags.values() if lag is not None]
    total = sum(known) if lags and len(known) == len(lags) else None
    return {
        "name": runner.projection.name,
        "active_generation": active,
        "building_generation": building,
        "following_generation": runner.generation,
        "started": started,
        "caught_up": started and total == 0,
        "lag": total,
        "applied": runner.applied,
        "undecodable": runner.undecodable,
        "dead_lettered": runner.dead_lettered,
        "advancing": runner.stalled_since is None,
        "last_error": runner.last_error,
        "stalled_since": runner.stalled_since,
        "partitions": [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "position": runner.positions.get(tp, 0),
                "lag": lag,
            }
            for tp, lag in sorted(lags.items(), key=lambda kv: (kv[0].topic, kv[0].partition))
        ],
    }


__all__ = ["NotStarted", "ReadSide", "projection_state", "routes"]
