"""The transactional outbox: events are rows written in the same transaction as state.

An event too large for Kafka is refused here, when it is emitted (:class:`EventTooLarge`, a
``PermanentError``: the consumer dead-letters the event that caused it, an API answers
422), rather than written and then refused by the broker for ever.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from events.bulk import insert_rows
from events.codec import AvroCodec
from events.db import Database
from events.envelope import Envelope, new_event_id, utcnow
from events.models import EventModel
from events.routing import PermanentError
from events.tables import outbox as outbox_table
from events.tables import outbox_quarantine
from events.telemetry import current_traceparent

OnCommit = Callable[[], None]

DEFAULT_MAX_EVENT_BYTES = 1_000_000
"""Under Kafka's default max.message.bytes (1048588) with room for the batch framing."""

# What a record adds to its payload, key and header bytes on the wire (length varints,
# attributes, timestamp and offset deltas) plus a record batch's header when it travels
# alone: 61 bytes of batch header, at most ~40 of record framing; rounded up.
RECORD_OVERHEAD_BYTES = 128


class EventTooLarge(PermanentError):
    """An event whose record would exceed the size limit: no retry can make it fit."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(
            f"{event_type} event of {size} bytes exceeds the limit of {limit} bytes "
            "(payload + key + headers)"
        )
        self.event_type = event_type
        self.size = size
        self.limit = limit


def record_size(payload: bytes, key: str, headers: Sequence[tuple[str, bytes]]) -> int:
    """The bytes an event takes as a Kafka record (an upper estimate)."""
    header_bytes = sum(len(k) + len(v) + 2 for k, v in headers)  # header names are ASCII
    return len(payload) + len(key.encode()) + header_bytes + RECORD_OVERHEAD_BYTES


class Outbox:
    """Turns payloads into outbox rows: encodes, fills the envelope, picks the topic, and
    refuses events larger than ``max_event_bytes``."""

    def __init__(
        self, codec: AvroCodec, service: str, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self.codec = codec
        self.service = service
        self.max_event_bytes = max_event_bytes
        self._listeners: list[OnCommit] = []

    def on_commit(self, listener: OnCommit) -> None:
        """Called after a unit of work that wrote rows commits (the relay's wake-up)."""
        self._listeners.append(listener)

    def committed(self) -> None:
        for listener in self._listeners:
            listener()

    def row(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str,
        cause: Envelope | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[dict[str, Any], Envelope]:
        schema = self.codec.catalogue.latest(event_type)
        event_id = event_id or new_event_id()
        env = Envelope(
            event_id=event_id,
            event_type=event_type,
            schema_version=schema.version,
            occurred_at=occurred_at or utcnow(),
            producer=self.service,
            correlation_id=correlation_id or (cause.correlation_id if cause else None) or event_id,
            key=key,
            causation_id=cause.event_id if cause else None,
            # The span writing this row (a handler's or an API call's) is the parent of
            # whatever handles the event next: one trace follows the causation chain.
            traceparent=traceparent
            or current_traceparent()
            or (cause.traceparent if cause else None),
        )
        body = self.codec.encode(event_type, payload)
        headers = env.to_headers()
        # Sized from the bytes in hand, before the row is built: no re-parse per event.
        size = record_size(body, key, headers)
        if size > self.max_event_bytes:
            raise EventTooLarge(event_type, size, self.max_event_bytes)
        row = {
            "event_id": event_id,
            "topic": self.codec.catalogue.topic_for(event_type),
            "key": key,
            "event_type": event_type,
            "payload": body,
            "headers": json.dumps(dict((k, v.decode()) for k, v in headers)),
            "traceparent": env.traceparent,
            "created_at": env.occurred_at,
        }
        return row, env


class UnitOfWork:
    """One database transaction: the caller's state changes plus the events they emit.

    ``async with db_uow as uow: ...; uow.emit(...); await uow.commit()``. Leaving the
    block without commit rolls everything back, rows and events alike.
    """

    def __init__(self, db: Database, outbox: Outbox, cause: Envelope | None = None) -> None:
        self._db = db
        self._outbox = outbox
        self.cause = cause
        self._rows: list[dict[str, Any]] = []
        self._staged: dict[Table, list[dict[str, Any]]] = {}
        self._emitted = False
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._db.session()
        await self._session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        self._session = None
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            await session.close()

    def emit(
        self,
        event: EventModel,
        *,
        key: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        return self.emit_raw(
            event.event_type,
            event.to_avro(),
            key=key,
            event_id=event_id,
            correlation_id=correlation_id,
            traceparent=traceparent,
        )

    def emit_raw(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        row, env = self._outbox.row(
            event_type,
            payload,
            key=key,
            cause=self.cause,
            event_id=event_id,
            correlation_id=correlation_id,
            traceparent=traceparent,
            occurred_at=occurred_at,
        )
        self._rows.append(row)
        return env

    def add(self, table: Table, **values: Any) -> None:
        """Stage a row insert; staged rows go in one multi-row INSERT per table at flush.

        Handlers of a batch that each insert a row pay one statement for the whole batch
        instead of one per event (a database round trip each). Staged rows are not visible
        to queries of this unit of work until ``flush()``.
        """
        self._staged.setdefault(table, []).append(values)

    async def flush(self) -> None:
        """Write the staged rows now (before reading them back in the same transaction)."""
        staged, self._staged = self._staged, {}
        for table, rows in staged.items():
            await insert_rows(self.session, table, rows)

    @property
    def pending_events(self) -> int:
        return len(self._rows)

    async def flush_events(self) -> None:
        if self._rows:
            await insert_rows(self.session, outbox_table, self._rows)
            self._emitted = True
            self._rows = []

    async def commit(self) -> None:
        await self.flush()
        await self.flush_events()
        await self.session.commit()
        if self._emitted:
            self._emitted = False
            self._outbox.committed()


async def unsent_backlog(db: Database) -> tuple[int, float | None]:
    """The outbox's unsent rows and the age in seconds of the oldest one."""
    async with db.session() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(outbox_table.c.created_at)).where(
                    outbox_table.c.sent_at.is_(None)
                )
            )
        ).one()
    if oldest is None:
        return int(count), None
    if oldest.tzinfo is None:  # SQLite returns naive datetimes
        oldest = oldest.replace(tzinfo=utcnow().tzinfo)
    return int(count), (utcnow() - oldest).total_seconds()


async def quarantined_rows(db: Database) -> int:
    """Rows the relay moved to the quarantine (events.relay_batch)."""
    async with db.session() as session:
        n = (
            await session.execute(select(func.count()).select_from(outbox_quarantine))
        ).scalar_one()
    return int(n)
