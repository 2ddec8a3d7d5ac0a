"""Shipping's statements: one row per order that reached shipping (a shipment or a
tombstone). The handlers lock it first (``FOR UPDATE``; SQLite locks the whole file): that
serialises a capture and a cancellation of one order on two PostgreSQL consumers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, insert, select

from events.prepared import KeyedUpdate, Prepared, Repository, Row
from services.shipping.domain import Shipment, Status
from services.shipping.tables import shipments

_BY_ORDER = select(shipments).where(shipments.c.order_id == bindparam("order_id"))
_GET = Prepared(_BY_ORDER)
_LOCK = Prepared(_BY_ORDER.with_for_update())
_INSERT = Prepared(insert(shipments))
_UPDATE = KeyedUpdate(shipments.c.order_id)


class ShippingRepository(Repository):
    """Shipping's rows in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def lock(self, order_id: str) -> Shipment | None:
        """The order's shipment (or tombstone), locked; None if shipping never saw it."""
        row = await _LOCK.first(self.session, {"order_id": order_id})
        if row is None:
            return None
        return Shipment(
            row["order_id"],
            Status(row["status"]),
            row["shipment_id"],
            row["carrier"],
            row["reason"],
        )

    async def insert(
        self, shipment: Shipment, customer_id: str, address: str | None, now: datetime
    ) -> None:
        """A new row; ``address`` is the JSON of the shipping address (None: a tombstone)."""
        await _INSERT.run(
            self.session,
            {
                "order_id": shipment.order_id,
                "customer_id": customer_id,
                "status": shipment.status.value,
                "shipment_id": shipment.shipment_id,
                "carrier": shipment.carrier,
                "reason": shipment.reason,
                "address": address,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def set_status(self, shipment: Shipment, now: datetime) -> None:
        status = shipment.status.value
        await _UPDATE.set(
            self.session, shipment.order_id, status=status, reason=shipment.reason, updated_at=now
        )

    async def get(self, order_id: str) -> Row | None:
        return await _GET.first(self.session, {"order_id": order_id})
