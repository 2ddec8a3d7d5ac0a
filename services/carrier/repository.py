"""The carrier's moves on its bookings, each inside the request's idempotency-key
transaction (``services.standin.idempotency.once``): each returns the HTTP status and body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.addresses import carrier_for
from services.carrier.domain import Status
from services.carrier.tables import bookings

Reply = tuple[int, dict[str, Any]]


async def book(session: AsyncSession, *, reference: str, country: str, postal_code: str) -> Reply:
    booking_id = str(uuid.uuid4())
    carrier = carrier_for(country)
    await session.execute(
        bookings.insert().values(
            booking_id=booking_id,
            reference=reference,
            carrier=carrier,
            status=Status.BOOKED.value,
            country=country.strip().upper(),
            postal_code=postal_code.strip(),
            created_at=datetime.now(UTC),
        )
    )
    return 201, {
        "booking_id": booking_id,
        "carrier": carrier,
        "status": Status.BOOKED.value,
        "reference": reference,
    }


async def cancel(session: AsyncSession, booking_id: str) -> Reply:
    """Cancelled, also when it was already (a cancel under a new key answers the same)."""
    result = await session.execute(
        bookings.update()
        .where(bookings.c.booking_id == booking_id)
        .values(status=Status.CANCELLED.value)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return 404, {"error": f"no booking {booking_id}"}
    return 200, {"booking_id": booking_id, "status": Status.CANCELLED.value}


async def listed(
    session: AsyncSession, status: Status | None, reference: str | None = None
) -> list[dict[str, str]]:
    query = select(
        bookings.c.booking_id, bookings.c.reference, bookings.c.status, bookings.c.carrier
    ).order_by(bookings.c.created_at, bookings.c.booking_id)
    if status is not None:
        query = query.where(bookings.c.status == status.value)
    if reference is not None:
        query = query.where(bookings.c.reference == reference)
    return [dict(row) for row in (await session.execute(query)).mappings()]
