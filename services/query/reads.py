"""The API's reads, always from the generation that is active at the time of the request.

A replay switches the active generation with one update and drops the old tables a moment
later; every read resolves the active generation first, so it sees the switch at once. A
read that resolved the old generation just before it was dropped is retried once on the
new one instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from events.projection_store import Generation, ProjectionStore
from services.query.domain import ORDER_STATUSES
from services.query.params import encode_cursor
from services.query.store import Reader
from services.query.tables import CUSTOMERS, ORDERS, SKUS, TIMELINE
from services.query.timeline import Entry, causal_order, trace_id

T = TypeVar("T")
Row = dict[str, Any]


class NotStarted(Exception):
    """The projection has no tables yet (the service is starting)."""


class Reads:
    def __init__(self, store: ProjectionStore, reader: Reader) -> None:
        self.store = store  # for the generations' table definitions only
        self.reader = reader

    async def _active(self) -> int:
        number = await self.reader.active_generation(self.store.projection.name)
        if number is None:
            raise NotStarted(self.store.projection.name)
        return number

    async def _read(self, fn: Callable[[AsyncSession, Generation], Awaitable[T]]) -> T:
        number = await self._active()
        for attempt in (1, 2):
            try:
                async with self.reader.session() as session:
                    return await fn(session, self.store.generation(number))
            except DBAPIError:
                latest = await self._active()
                if attempt == 2 or latest == number:
                    raise
                number = latest  # the generation was switched and dropped meanwhile
        raise AssertionError("unreachable")

    async def order(self, order_id: str) -> Row | None:
        async def read(s: AsyncSession, gen: Generation) -> Row | None:
            t = gen[ORDERS]
            query = select(t).where(t.c.order_id == order_id, t.c.created_at.is_not(None))
            row = (await s.execute(query)).mappings().first()
            return None if row is None else order_json(row)

        return await self._read(read)

    async def orders(
        self,
        *,
        status: str | None,
        customer_id: str | None,
        limit: int,
        after: tuple[str, str] | None,
        stuck: bool | None = None,
        newest_first: bool = False,
    ) -> tuple[list[Row], str | None]:
        """A page of orders by (created_at, order_id), oldest or newest first, and the cursor
        of the next page. ``stuck``: only the orders stuck now (True), or only the others."""

        async def read(s: AsyncSession, gen: Generation) -> tuple[list[Row], str | None]:
            t = gen[ORDERS]
            query = select(t).where(t.c.created_at.is_not(None))
            if status is not None:
                query = query.where(t.c.status == status)
            if customer_id is not None:
                query = query.where(t.c.customer_id == customer_id)
            if stuck is not None:
                stuck_now = t.c.stuck_now_at.is_not(None)  # the partial index's condition
                query = query.where(stuck_now if stuck else t.c.stuck_now_at.is_(None))
            if after is not None:
                at, order_id = after
                if newest_first:
                    beyond = or_(
                        t.c.created_at < at, and_(t.c.created_at == at, t.c.order_id < order_id)
                    )
                else:
                    beyond = or_(
                        t.c.created_at > at, and_(t.c.created_at == at, t.c.order_id > order_id)
                    )
                query = query.where(beyond)
            if newest_first:
                query = query.order_by(t.c.created_at.desc(), t.c.order_id.desc())
            else:
                query = query.order_by(t.c.created_at, t.c.order_id)
            rows = (await s.execute(query.limit(limit + 1))).mappings().all()
            page = [order_json(r) for r in rows[:limit]]
            if len(rows) <= limit:
                return page, None
            last = rows[limit - 1]
            return page, encode_cursor(last["created_at"], last["order_id"], newest_first)

        return await self._read(read)

    async def stats(self) -> Row:
        """Orders per status (every status present), those stuck now, and the total."""

        async def read(s: AsyncSession, gen: Generation) -> Row:
            t = gen[ORDERS]
            created = t.c.created_at.is_not(None)
            counts = await s.execute(
                select(t.c.status, func.count()).where(created).group_by(t.c.status)
            )
            by_status = dict.fromkeys(ORDER_STATUSES, 0)
            for name, n in counts:
                by_status[name] = int(n)
            stuck = await s.execute(
                select(func.count()).select_from(t).where(t.c.stuck_now_at.is_not(None))
            )
            return {
                "by_status": by_status,
                "stuck": int(stuck.scalar_one()),
                "total": sum(by_status.values()),
            }

        return await self._read(read)

    async def timeline(self, order_id: str) -> list[Row]:
        async def read(s: AsyncSession, gen: Generation) -> list[Row]:
            t = gen[TIMELINE]
            rows = (await s.execute(select(t).where(t.c.order_id == order_id))).mappings().all()
            return [dict(r) for r in rows]

        rows = {r["event_id"]: r for r in await self._read(read)}
        entries = [
            Entry(r["event_id"], r["event_type"], r["occurred_at"], r["causation_id"])
            for r in rows.values()
        ]
        return [timeline_json(rows[e.event_id]) for e in causal_order(entries)]

    async def customer(self, customer_id: str) -> Row | None:
        async def read(s: AsyncSession, gen: Generation) -> Row | None:
            t = gen[CUSTOMERS]
            query = select(t).where(t.c.customer_id == customer_id)
            row = (await s.execute(query)).mappings().first()
            return None if row is None else customer_json(row)

        return await self._read(read)

    async def sku(self, sku: str) -> Row | None:
        async def read(s: AsyncSession, gen: Generation) -> Row | None:
            t = gen[SKUS]
            row = (await s.execute(select(t).where(t.c.sku == sku))).mappings().first()
            return None if row is None else dict(row)

        return await self._read(read)


def order_json(r: Any) -> Row:
    stock_lines = json.loads(r["stock_lines"]) if r["stock_lines"] else None
    return {
        "order_id": r["order_id"],
        "customer_id": r["customer_id"],
        "status": r["status"],
        "total_cents": r["total_cents"],
        "lines": json.loads(r["lines"]),
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
        "terminal_at": r["terminal_at"],
        "reason": r["reason"],
        "failed_step": r["failed_step"],
        "payment_id": r["payment_id"],
        "payment_status": r["payment_status"],
        "captured_cents": r["captured_cents"],
        "refunded_cents": r["refunded_cents"],
        "shipment_id": r["shipment_id"],
        "shipment_status": r["shipment_status"],
        "carrier": r["carrier"],
        "stock_status": r["stock_status"],
        "stock_lines": None
        if stock_lines is None
        else [{"sku": s, "quantity": q} for s, q in stock_lines],
        "notified_at": r["notified_at"],
        "stuck": None
        if r["stuck_now_at"] is None
        else {
            "waiting_on": r["waiting_on"],
            "waiting_since": r["waiting_since"],
            "deadline_at": r["deadline_at"],
            "detected_at": r["stuck_at"],
        },
    }


def timeline_json(r: Row) -> Row:
    return {
        "event_id": r["event_id"],
        "event_type": r["event_type"],
        "service": r["service"],
        "occurred_at": r["occurred_at"],
        "causation_id": r["causation_id"],
        "correlation_id": r["correlation_id"],
        "trace_id": trace_id(r["traceparent"]),
        "topic": r["topic"],
        "partition": r["partition"],
        "offset": r["offset"],
    }


def customer_json(r: Any) -> Row:
    declined = None
    if r["last_declined_at"] is not None:
        declined = {
            "declined_at": r["last_declined_at"],
            "balance_cents": r["last_declined_balance_cents"],
            "event_id": r["last_declined_event_id"],
        }
    return {
        "customer_id": r["customer_id"],
        "orders_count": r["orders_count"],
        "deposited_cents": r["deposited_cents"],
        "captured_cents": r["captured_cents"],
        "refunded_cents": r["refunded_cents"],
        "balance_cents": r["balance_cents"],
        "balance_as_of": r["balance_as_of"],
        "last_decline": declined,
    }
