"""Shipping's statements: one row per order that reached shipping (a shipment or a
tombstone). The handlers lock it first (``FOR UPDATE``; SQLite locks the whole file): that
serialises a capture and a cancellation of one order on two PostgreSQL consumers."""

from __future__ import annotations

from datetime import datetime

from events.prepared import Row
from events.repository import KeyedRows, Repository
from services.shipping.domain import Shipment, Status
from services.shipping.tables import shipments

_SHIPMENTS = KeyedRows(shipments.c.order_id)


class ShippingRepository(Repository):
    """Shipping's rows in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def lock(self, order_id: str) -> Shipment | None:
        """The order's shipment (or tombstone), locked; None if shipping never saw it."""
        row = await _SHIPMENTS.get(self.session, order_id, lock=True)
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
        await _SHIPMENTS.insert(
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
        await _SHIPMENTS.set(
            self.session, shipment.order_id, status=status, reason=shipment.reason, updated_at=now
        )

    async def get(self, order_id: str) -> Row | None:
        return await _SHIPMENTS.get(self.session, order_id)
