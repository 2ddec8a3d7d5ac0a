"""Quarantined outbox rows, for operators (`choreo outbox list|show|retry|drop`).

The relay moves a row Kafka refuses for good into ``choreo_outbox_quarantine`` (see
:mod:`events.relay`). Here an operator lists those rows across the services' databases,
looks at one, re-queues it (after raising the topic's limit or fixing an ACL) or drops it.
A re-queued row goes back into the outbox as a new unsent row at its end, keeping its
event id, so consumers that somehow saw it before skip it (their inbox); the service's
relay publishes it at its next poll.

A row is named ``SERVICE:NUMBER`` (its number in that service's quarantine table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from events.codec import AvroCodec, CodecError
from events.db import Database
from events.envelope import utcnow
from events.tables import outbox, outbox_quarantine


class OutboxAdminError(Exception):
    """A bad row id or service; the message is one line."""


@dataclass(frozen=True)
class Quarantined:
    service: str
    id: int
    outbox_id: int
    event_id: str
    event_type: str
    topic: str
    key: str
    size: int
    error_type: str
    reason: str
    created_at: datetime
    quarantined_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.service}:{self.id}"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.ref,
            "service": self.service,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "topic": self.topic,
            "key": self.key,
            "size": self.size,
            "error": self.error_type,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "quarantined_at": self.quarantined_at.isoformat(),
        }


def parse_ref(text: str) -> tuple[str, int]:
    """``service:number``; OutboxAdminError naming the text otherwise."""
    service, _, number = text.rpartition(":")
    if not service or not number.isdigit():
        raise OutboxAdminError(f"{text!r} is not a quarantined row id (SERVICE:NUMBER)")
    return service, int(number)


_COLUMNS = [c for c in outbox_quarantine.c if c.name not in ("payload", "headers", "traceparent")]


async def _has_table(db: Database) -> bool:
    # A database the service has not opened since the table was added has no quarantine.
    async with db.engine.connect() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table(outbox_quarantine.name)))


def _quarantined(service: str, row: Any) -> Quarantined:
    return Quarantined(
        service=service,
        id=int(row.id),
        outbox_id=int(row.outbox_id),
        event_id=row.event_id,
        event_type=row.event_type,
        topic=row.topic,
        key=row.key,
        size=int(row.size),
        error_type=row.error_type,
        reason=row.reason,
        created_at=row.created_at,
        quarantined_at=row.quarantined_at,
    )


async def list_rows(db: Database, service: str) -> list[Quarantined]:
    """The service's quarantined rows, oldest first."""
    if not await _has_table(db):
        return []
    stmt = select(*_COLUMNS, func.length(outbox_quarantine.c.payload).label("size")).order_by(
        outbox_quarantine.c.id
    )
    async with db.session() as session:
        return [_quarantined(service, r) for r in (await session.execute(stmt)).all()]


async def _row(session: AsyncSession, row_id: int) -> Any:
    return (
        (await session.execute(select(outbox_quarantine).where(outbox_quarantine.c.id == row_id)))
        .mappings()
        .one_or_none()
    )


async def show(db: Database, row_id: int, codec: AvroCodec | None = None) -> dict[str, Any]:
    """Everything about one row, its payload decoded when the codec knows its schema."""
    async with db.session() as session:
        row = await _row(session, row_id)
    if row is None:
        raise LookupError(row_id)
    payload: bytes = row["payload"]
    described = f"{len(payload)} bytes"
    if codec is not None:
        try:
            decoded = codec.decode(payload)
            text = str(decoded.payload)
            cut = f"... ({len(text)} characters)" if len(text) > 2000 else ""
            described = f"{decoded.event_type} v{decoded.writer_version}: {text[:2000]}{cut}"
        except CodecError as exc:
            described = f"undecodable ({exc}): {payload.hex()[:400]}"
    return {
        **{k: v for k, v in row.items() if k != "payload"},
        "size": len(payload),
        "payload": described,
    }


async def requeue(db: Database, row_ids: Sequence[int] | None) -> list[tuple[int, int]]:
    """Moves rows (all when ``row_ids`` is None) back into the outbox as new unsent rows,
    in their order, in one transaction; returns (quarantine id, new outbox id) pairs.
    LookupError names the ids that are not quarantined."""
    async with db.session() as session, session.begin():
        stmt = select(outbox_quarantine).order_by(outbox_quarantine.c.id)
        if row_ids is not None:
            stmt = stmt.where(outbox_quarantine.c.id.in_(row_ids))
        rows = (await session.execute(stmt)).mappings().all()
        _check_found(row_ids, rows)
        moved = []
        now = utcnow()
        for row in rows:
            new_id = (
                await session.execute(
                    outbox.insert()
                    .values(
                        event_id=row["event_id"],
                        topic=row["topic"],
                        key=row["key"],
                        event_type=row["event_type"],
                        payload=row["payload"],
                        headers=row["headers"],
                        traceparent=row["traceparent"],
                        # Its age in the backlog counts from now: it was out of the queue.
                        created_at=now,
                    )
                    .returning(outbox.c.id)
                )
            ).scalar_one()
            moved.append((int(row["id"]), int(new_id)))
        if rows:
            await session.execute(
                delete(outbox_quarantine).where(outbox_quarantine.c.id.in_([r["id"] for r in rows]))
            )
    return moved


async def drop(db: Database, row_ids: Sequence[int]) -> int:
    """Deletes the rows for good; LookupError names the ids that are not quarantined."""
    async with db.session() as session, session.begin():
        rows = (
            (
                await session.execute(
                    select(outbox_quarantine.c.id).where(outbox_quarantine.c.id.in_(row_ids))
                )
            )
            .mappings()
            .all()
        )
        _check_found(row_ids, rows)
        await session.execute(delete(outbox_quarantine).where(outbox_quarantine.c.id.in_(row_ids)))
    return len(rows)


def _check_found(wanted: Sequence[int] | None, rows: Sequence[Any]) -> None:
    if wanted is None:
        return
    missing = sorted(set(wanted) - {int(r["id"]) for r in rows})
    if missing:
        raise LookupError(*missing)
