"""The provider's moves on its books, each inside the request's idempotency-key transaction
(``services.standin.idempotency.once``): each returns the HTTP status and body to answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.provider.domain import (
    Refusal,
    Status,
    capture_refusal,
    refund_refusal,
    void_refusal,
)
from services.provider.tables import authorisations, captures, refunds

Reply = tuple[int, dict[str, Any]]


def _refused(refusal: Refusal) -> Reply:
    return refusal.status, {"error": refusal.reason}


def _now() -> datetime:
    return datetime.now(UTC)


async def authorise(
    session: AsyncSession, *, reference: str, customer_id: str, amount_cents: int
) -> Reply:
    authorisation_id = str(uuid.uuid4())
    await session.execute(
        authorisations.insert().values(
            authorisation_id=authorisation_id,
            reference=reference,
            customer_id=customer_id,
            amount_cents=amount_cents,
            status=Status.AUTHORISED.value,
            created_at=_now(),
        )
    )
    return 201, {
        "authorisation_id": authorisation_id,
        "status": Status.AUTHORISED.value,
        "reference": reference,
        "customer_id": customer_id,
        "amount_cents": amount_cents,
    }


async def _authorisation(session: AsyncSession, authorisation_id: str) -> Any:
    # FOR UPDATE (PostgreSQL; SQLite's one writer needs none): a capture and a void of
    # one authorisation under different keys take turns, the second sees the first's move.
    query = (
        select(authorisations)
        .where(authorisations.c.authorisation_id == authorisation_id)
        .with_for_update()
    )
    return (await session.execute(query)).first()


async def capture(session: AsyncSession, authorisation_id: str, amount_cents: int) -> Reply:
    auth = await _authorisation(session, authorisation_id)
    if auth is None:
        return 404, {"error": f"no authorisation {authorisation_id}"}
    refusal = capture_refusal(Status(auth.status), auth.amount_cents, amount_cents)
    if refusal is not None:
        return _refused(refusal)
    capture_id = str(uuid.uuid4())
    await session.execute(
        captures.insert().values(
            capture_id=capture_id,
            authorisation_id=authorisation_id,
            customer_id=auth.customer_id,
            amount_cents=amount_cents,
            created_at=_now(),
        )
    )
    await session.execute(
        authorisations.update()
        .where(authorisations.c.authorisation_id == authorisation_id)
        .values(status=Status.CAPTURED.value)
    )
    return 200, {
        "capture_id": capture_id,
        "authorisation_id": authorisation_id,
        "status": Status.CAPTURED.value,
        "amount_cents": amount_cents,
    }


async def void(session: AsyncSession, authorisation_id: str) -> Reply:
    auth = await _authorisation(session, authorisation_id)
    if auth is None:
        return 404, {"error": f"no authorisation {authorisation_id}"}
    refusal = void_refusal(Status(auth.status))
    if refusal is not None:
        return _refused(refusal)
    await session.execute(
        authorisations.update()
        .where(authorisations.c.authorisation_id == authorisation_id)
        .values(status=Status.VOIDED.value)
    )
    return 200, {"authorisation_id": authorisation_id, "status": Status.VOIDED.value}


async def refund(session: AsyncSession, capture_id: str, amount_cents: int) -> Reply:
    query = select(captures).where(captures.c.capture_id == capture_id).with_for_update()
    cap = (await session.execute(query)).first()
    if cap is None:
        return 404, {"error": f"no capture {capture_id}"}
    refunded = (
        await session.execute(
            select(func.coalesce(func.sum(refunds.c.amount_cents), 0)).where(
                refunds.c.capture_id == capture_id
            )
        )
    ).scalar_one()
    refusal = refund_refusal(cap.amount_cents, int(refunded), amount_cents)
    if refusal is not None:
        return _refused(refusal)
    refund_id = str(uuid.uuid4())
    await session.execute(
        refunds.insert().values(
            refund_id=refund_id,
            capture_id=capture_id,
            customer_id=cap.customer_id,
            amount_cents=amount_cents,
            created_at=_now(),
        )
    )
    return 201, {
        "refund_id": refund_id,
        "capture_id": capture_id,
        "status": "refunded",
        "amount_cents": amount_cents,
    }


async def ledger(
    session: AsyncSession, customer_id: str | None = None
) -> dict[str, dict[str, int]]:
    """Captured and refunded cents per customer (only ``customer_id``'s when given)."""
    out: dict[str, dict[str, int]] = {}
    for table, column in ((captures, "captured_cents"), (refunds, "refunded_cents")):
        query = select(table.c.customer_id, func.sum(table.c.amount_cents)).group_by(
            table.c.customer_id
        )
        if customer_id is not None:
            query = query.where(table.c.customer_id == customer_id)
        for customer, cents in (await session.execute(query)).all():
            row = out.setdefault(customer, {"captured_cents": 0, "refunded_cents": 0})
            row[column] = int(cents)
    return out
