"""The orders and prices tables' statements, for the handlers, the API and the watchdog (built
once, at import: see ``events.repository``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select

from events.prepared import Prepared, Row
from events.repository import KeyedRows, KeyedUpdate, Repository
from services.orders.domain import Status, Transition, Waiting
from services.orders.tables import orders, prices

_ORDERS = KeyedRows(orders.c.order_id)
_EXISTS = Prepared(select(orders.c.order_id).where(orders.c.order_id == bindparam("order_id")))
# Conditional: the row count says which of several watchdogs flagged the order.
_FLAG_UNFLAGGED = KeyedUpdate(orders.c.order_id, orders.c.stuck_at.is_(None))
_PRICES = KeyedRows(prices.c.sku)
_PRICES_OF = Prepared(
    select(prices.c.sku, prices.c.unit_price_cents).where(
        prices.c.sku.in_(bindparam("skus", expanding=True))
    )
)


class OrdersRepository(Repository):
    """Orders in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def exists(self, order_id: str) -> bool:
        return await _EXISTS.first(self.session, {"order_id": order_id}) is not None

    async def get(self, order_id: str, *, lock: bool = False) -> Row | None:
        """The order's row (``lock``: locked until the transaction ends)."""
        return await _ORDERS.get(self.session, order_id, lock=lock)

    async def insert(self, order: dict[str, Any]) -> None:
        await _ORDERS.insert(self.session, order)

    async def set_waiting(self, order_id: str, waiting: Waiting, now: datetime) -> None:
        # stuck_at was about the step it left: cleared, so the watchdog can flag the order
        # again at the new step if the saga is still overdue.
        await _ORDERS.set(
            self.session,
            order_id,
            waiting_on=waiting.step.value,
            waiting_since=waiting.since,
            stuck_at=None,
            updated_at=now,
        )

    async def set_late_facts(self, order_id: str, late_facts: str) -> None:
        await _ORDERS.set(self.session, order_id, late_facts=late_facts)

    async def end(
        self, order_id: str, transition: Transition, shipment_id: str | None, now: datetime
    ) -> None:
        await _ORDERS.set(
            self.session,
            order_id,
            status=transition.status,
            reason=transition.reason,
            failed_step=transition.failed_step,
            updated_at=now,
            waiting_on=None,  # an ended order waits on nothing (and leaves the watchdog's index)
            shipment_id=shipment_id,
        )

    async def flag_stuck(self, order_id: str, now: datetime) -> bool:
        """Sets ``stuck_at`` unless another watchdog did first; True if this call did."""
        return await _FLAG_UNFLAGGED.set(self.session, order_id, stuck_at=now, updated_at=now) == 1

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Ids of orders in flight, not flagged, past their deadline at ``now``."""
        return list((await self.session.execute(due_query(now, limit))).scalars())

    async def listing(
        self, status: Status | None, customer_id: str | None, limit: int
    ) -> list[Row]:
        query = select(orders).order_by(orders.c.created_at, orders.c.order_id).limit(limit)
        if status is not None:
            query = query.where(orders.c.status == status)
        if customer_id is not None:
            query = query.where(orders.c.customer_id == customer_id)
        return [dict(r) for r in (await self.session.execute(query)).mappings()]

    async def prices(self, skus: Iterable[str]) -> dict[str, int]:
        """The known unit prices of ``skus`` (a SKU never priced is missing)."""
        rows = await _PRICES_OF.rows(self.session, {"skus": sorted(set(skus))})
        return {r["sku"]: int(r["unit_price_cents"]) for r in rows}

    async def price(self, sku: str) -> Row | None:
        return await _PRICES.get(self.session, sku)

    async def set_price(self, sku: str, cents: int, priced_at: datetime) -> None:
        """Keeps ``cents`` as the SKU's price (inserting its first)."""
        if await _PRICES.set(self.session, sku, unit_price_cents=cents, priced_at=priced_at) == 0:
            row = {"sku": sku, "unit_price_cents": cents, "priced_at": priced_at}
            await _PRICES.insert(self.session, row)

    async def count_by_status(self) -> dict[str, int]:
        query = select(orders.c.status, func.count()).group_by(orders.c.status)
        return {status: int(n) for status, n in (await self.session.execute(query)).all()}


def due_query(now: datetime, limit: int) -> Select[str]:
    """The watchdog's scan: the terms of the partial index ix_orders_orders_overdue plus the
    deadline, so the scan reads that index only."""
    return (
        select(orders.c.order_id)
        .where(
            orders.c.waiting_on.is_not(None),
            orders.c.stuck_at.is_(None),
            orders.c.deadline_at <= now,
        )
        .order_by(orders.c.deadline_at)
        .limit(limit)
    )
