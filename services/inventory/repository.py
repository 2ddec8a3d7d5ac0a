"""Inventory's statements: stock levels, prices, reservations and applied restocks, for the handlers
and the API. What a handler changes it reads ``FOR UPDATE`` (a no-op on SQLite, whose
transactions hold the write lock already).

A batch's stock rows locked ahead (:meth:`InventoryRepository.lock_stock_ahead`) are kept in
the session's ``info`` as they stand in the transaction (every write goes through
``save_stock``, which updates them), so the handlers' ``lock_stock`` reads them there instead
of asking the database again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import bindparam, select

from events.prepared import Prepared, Row
from events.repository import InsertOnce, KeyedRows, Repository
from schemas.models import StockRestocked
from services.inventory.domain import Line, Reservation, ReservationStatus, StockLevel
from services.inventory.tables import prices, reservations, restocks, stock

_RESTOCKS = InsertOnce(restocks.c.restock_id)
_STOCK = KeyedRows(stock.c.sku)
_LOCK_STOCK = Prepared(
    select(stock)
    .where(stock.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(stock.c.sku)
    .with_for_update()
)
_RESERVATIONS = KeyedRows(reservations.c.order_id)
_RESERVED_LINES = Prepared(
    select(reservations.c.lines).where(
        reservations.c.order_id.in_(bindparam("order_ids", expanding=True))
    )
)
_PRICES = KeyedRows(prices.c.sku)
# The session's info key of the stock locked ahead: SKU -> counts (None: no row yet).
_AHEAD = "inventory.stock_locked_ahead"
Counts = tuple[int, int, int, int]  # on_hand, reserved, shipped, received


class InventoryRepository(Repository):
    """Inventory's rows in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def record_restock(self, restock: StockRestocked) -> bool:
        """Records a restock by its id; False when it was recorded already (under another
        event id), so that it counts once."""
        return await _RESTOCKS.add(self.session, restock.model_dump())

    async def lock_stock(self, skus: Iterable[str]) -> dict[str, StockLevel]:
        """The stored levels of ``skus`` (a SKU never stocked is missing), locked."""
        wanted = sorted(set(skus))
        ahead: dict[str, Counts | None] | None = self.session.info.get(_AHEAD)
        if ahead is not None and all(sku in ahead for sku in wanted):
            return {
                sku: StockLevel(sku, *counts)
                for sku in wanted
                if (counts := ahead[sku]) is not None
            }
        return {sku: StockLevel(sku, *counts) for sku, counts in (await self._lock(wanted)).items()}

    async def lock_stock_ahead(self, skus: Iterable[str]) -> None:
        """Locks the stock rows of ``skus`` for the rest of the transaction, and keeps them
        for the handlers' ``lock_stock``."""
        wanted = sorted(set(skus))
        ahead: dict[str, Counts | None] = dict.fromkeys(wanted)
        ahead.update(await self._lock(wanted))
        self.session.info[_AHEAD] = ahead

    async def _lock(self, sorted_skus: list[str]) -> dict[str, Counts]:
        # Sorted, so that two transactions lock shared SKUs in the same order (no deadlock).
        rows = await _LOCK_STOCK.rows(self.session, {"skus": sorted_skus})
        return {r["sku"]: (r["on_hand"], r["reserved"], r["shipped"], r["received"]) for r in rows}

    async def reserved_skus(self, order_ids: Iterable[str]) -> set[str]:
        """The SKUs held for ``order_ids`` (orders inventory has not seen hold none)."""
        rows = await _RESERVED_LINES.rows(self.session, {"order_ids": list(set(order_ids))})
        return {line["sku"] for row in rows for line in json.loads(row["lines"])}

    async def save_stock(
        self, levels: Iterable[StockLevel], now: datetime, *, new: bool = False
    ) -> None:
        """Writes ``levels`` back (``new``: inserts them)."""
        ahead: dict[str, Counts | None] | None = self.session.info.get(_AHEAD)
        for level in levels:
            if new:
                await _STOCK.insert(self.session, {"sku": level.sku, **_counts(level, now)})
            else:
                await _STOCK.set(self.session, level.sku, **_counts(level, now))
            if ahead is not None and level.sku in ahead:
                ahead[level.sku] = (level.on_hand, level.reserved, level.shipped, level.received)

    async def reservation(
        self, order_id: str, *, lock: bool = False
    ) -> tuple[str, Reservation] | None:
        """The order's customer and reservation, if inventory has seen the order."""
        found = await _RESERVATIONS.get(self.session, order_id, lock=lock)
        if found is None:
            return None
        lines = tuple(Line(line["sku"], line["quantity"]) for line in json.loads(found["lines"]))
        return found["customer_id"], Reservation(lines, ReservationStatus(found["status"]))

    async def insert_reservation(
        self,
        order_id: str,
        customer_id: str,
        reservation: Reservation,
        reason: str | None,
        now: datetime,
    ) -> None:
        lines = [{"sku": x.sku, "quantity": x.quantity} for x in reservation.lines]
        await _RESERVATIONS.insert(
            self.session,
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "status": reservation.status.value,
                "lines": json.dumps(lines),
                "reason": reason,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def set_reservation_status(
        self, order_id: str, reservation: Reservation, reason: str | None, now: datetime
    ) -> None:
        status = reservation.status.value
        await _RESERVATIONS.set(
            self.session, order_id, status=status, reason=reason, updated_at=now
        )

    async def price(self, sku: str, *, lock: bool = False) -> int | None:
        """The SKU's unit price, None when it was never priced."""
        row = await _PRICES.get(self.session, sku, lock=lock)
        return None if row is None else int(row["unit_price_cents"])

    async def set_price(
        self, sku: str, cents: int, restock_id: str, now: datetime, *, new: bool
    ) -> None:
        """Stores the SKU's unit price (``new``: its first)."""
        values = {"unit_price_cents": cents, "restock_id": restock_id, "priced_at": now}
        if new:
            await _PRICES.insert(self.session, {"sku": sku, **values})
        else:
            await _PRICES.set(self.session, sku, **values)

    async def stock(self, sku: str) -> Row | None:
        return await _STOCK.get(self.session, sku)

    async def reservation_row(self, order_id: str) -> Row | None:
        return await _RESERVATIONS.get(self.session, order_id)


def _counts(level: StockLevel, now: datetime) -> dict[str, object]:
    return {
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "shipped": level.shipped,
        "received": level.received,
        "updated_at": now,
    }
