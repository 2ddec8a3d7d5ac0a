"""Shipping's statements: one row per order that reached shipping (a shipment or a
tombstone), and the calls made to the carrier. The handlers lock the order's row first
(``FOR UPDATE``; SQLite locks the whole file): that serialises a capture and a cancellation
of one order on two PostgreSQL consumers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from events.prepared import Row
from events.repository import KeyedRows, Repository
from services.shipping.domain import Shipment, Status
from services.shipping.tables import carrier_calls, shipments

_SHIPMENTS = KeyedRows(shipments.c.order_id)
_CALLS = KeyedRows(carrier_calls.c.idempotency_key)


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

    async def record_call(
        self,
        key: str,
        *,
        order_id: str,
        operation: str,
        status: int,
        answer: dict[str, Any],
        now: datetime,
    ) -> None:
        """Stores a carrier call and its answer (the same key again: its latest answer,
        which the carrier gives unchanged for a key)."""
        body = json.dumps(answer, sort_keys=True)
        if await _CALLS.set(self.session, key, status=status, answer=body):
            return
        row = {
            "idempotency_key": key,
            "order_id": order_id,
            "operation": operation,
            "status": status,
            "answer": body,
            "created_at": now,
        }
        await _CALLS.insert(self.session, row)

    async def call_answer(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """The stored status and answer of the call made under ``key``; None if none was."""
        row = await _CALLS.get(self.session, key)
        if row is None:
            return None
        answer: dict[str, Any] = json.loads(row["answer"])
        return row["status"], answer
