"""Sequenced dead letters: the statements on blocked keys and parked events.

When a consumer dead-letters an event that has a key, the key is blocked for that consumer
(``choreo_blocked_keys``) and the key's later events are parked (``choreo_parked_events``)
instead of applied after a hole. Re-driving the blocking event applies it and then the
parked ones, in order, in one transaction; ``choreo dlq release`` applies the parked ones
without it. The consumer runtime (events.consumer) decides when; this module holds the
rows and the statements.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.structs import ConsumerRecord
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from events.bulk import insert_rows
from events.envelope import CE_ID, CE_TYPE, H_EVENT_ID, H_EVENT_TYPE
from events.prepared import Prepared
from events.tables import blocked_keys, inbox, parked_events

_KEY_LIMIT = 200  # characters kept as text; longer keys are stored as a digest
_DIGEST = "sha256:"
# Records without a usable event id get one made of their position, so that the inbox
# still makes a re-delivery of a parked record a no-op.
_NAMESPACE = uuid.UUID("6f1e3c2a-4b8d-4c1e-9a57-0d2b7c9e5f31")

_BLOCKED_AMONG = Prepared(
    select(blocked_keys.c.key, blocked_keys.c.event_id).where(
        blocked_keys.c.consumer == bindparam("consumer"),
        blocked_keys.c.key.in_(bindparam("keys", expanding=True)),
    )
)


def key_text(key: bytes) -> str:
    """The key as the tables store it: its text when short UTF-8 (PostgreSQL refuses NUL in
    text), else a digest that still tells keys apart."""
    try:
        text = key.decode()
    except UnicodeDecodeError:
        text = None
    if text is None or len(text) > _KEY_LIMIT or "\x00" in text or text.startswith(_DIGEST):
        return _DIGEST + hashlib.sha256(key).hexdigest()
    return text


def record_key(record: ConsumerRecord) -> str | None:
    return None if record.key is None else key_text(record.key)


def _header(record: ConsumerRecord, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name and v is not None:
            try:
                return bytes(v).decode()
            except UnicodeDecodeError:
                return None
    return None


def record_event_id(record: ConsumerRecord) -> str:
    """The envelope's event id; for a record without a readable one, an id made of its
    topic, partition and offset."""
    # CloudEvents' id on a record with only those headers, as its envelope reads it.
    found = _header(record, H_EVENT_ID) or _header(record, CE_ID)
    if found is not None and len(found) <= 36:
        return found
    return str(uuid.uuid5(_NAMESPACE, f"{record.topic}:{record.partition}:{record.offset}"))


def record_event_type(record: ConsumerRecord) -> str | None:
    """The type the headers say, before decoding: choreo's, else CloudEvents'."""
    return _header(record, H_EVENT_TYPE) or _header(record, CE_TYPE)


def _headers_json(record: ConsumerRecord) -> str:
    return json.dumps(
        [
            [k, None if v is None else base64.b64encode(bytes(v)).decode()]
            for k, v in record.headers or ()
        ]
    )


def parked_record(row: dict[str, Any]) -> ConsumerRecord:
    """A parked row as the record it was, to apply (or dead-letter) as if just fetched."""
    headers = [
        (str(k), None if v is None else base64.b64decode(v)) for k, v in json.loads(row["headers"])
    ]
    key, value = row["key_bytes"], row["value"]
    return ConsumerRecord(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        timestamp=0,
        timestamp_type=0,
        key=None if key is None else bytes(key),
        value=None if value is None else bytes(value),
        checksum=None,
        serialized_key_size=-1 if key is None else len(key),
        serialized_value_size=-1 if value is None else len(value),
        headers=headers,
    )


@dataclass(frozen=True)
class BlockedKey:
    consumer: str
    key: str
    event_id: str
    origin: str
    reason: str
    blocked_at: datetime
    released: bool
    parked: int


async def blocks(session: AsyncSession, consumer: str | None = None) -> list[BlockedKey]:
    """Blocked keys with the number of events parked behind each (one consumer, or all)."""
    parked = (
        select(func.count())
        .where(
            parked_events.c.consumer == blocked_keys.c.consumer,
            parked_events.c.key == blocked_keys.c.key,
        )
        .scalar_subquery()
    )
    stmt = select(blocked_keys, parked.label("parked")).order_by(
        blocked_keys.c.consumer, blocked_keys.c.blocked_at
    )
    if consumer is not None:
        stmt = stmt.where(blocked_keys.c.consumer == consumer)
    rows = (await session.execute(stmt)).mappings().all()
    return [
        BlockedKey(
            consumer=r["consumer"],
            key=r["key"],
            event_id=r["event_id"],
            origin=f"{r['topic']}[{r['partition']}]@{r['offset']}",
            reason=r["reason"],
            blocked_at=r["blocked_at"],
            released=r["released_at"] is not None,
            parked=int(r["parked"]),
        )
        for r in rows
    ]


async def blocked_among(
    session: AsyncSession, consumer: str, keys: Iterable[str]
) -> dict[str, str]:
    """Which of ``keys`` are blocked for ``consumer``: key -> the blocking event's id."""
    found = await _BLOCKED_AMONG.rows(session, {"consumer": consumer, "keys": list(keys)})
    return {r["key"]: r["event_id"] for r in found}


async def block(
    session: AsyncSession,
    consumer: str,
    record: ConsumerRecord,
    *,
    reason: str,
    now: datetime,
) -> str:
    """Blocks the record's key behind it; a key already blocked by the same event (it failed
    again after a re-drive) keeps its block, with the new reason and position. Returns the
    blocking event's id."""
    key = key_text(record.key or b"")
    event_id = record_event_id(record)
    values = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason": reason,
        "blocked_at": now,
    }
    where = (blocked_keys.c.consumer == consumer, blocked_keys.c.key == key)
    current = (
        await session.execute(select(blocked_keys.c.event_id).where(*where))
    ).scalar_one_or_none()
    if current is None:
        await session.execute(
            insert(blocked_keys).values(consumer=consumer, key=key, event_id=event_id, **values)
        )
        return event_id
    if current == event_id:
        await session.execute(update(blocked_keys).where(*where).values(**values))
    return str(current)


async def claim(
    session: AsyncSession, consumer: str, key: str, *, event_id: str | None, released: bool
) -> bool:
    """Removes the key's block if it is still the one expected (blocked by ``event_id``, or
    released by an operator); False if another transaction got there first."""
    stmt = delete(blocked_keys).where(
        blocked_keys.c.consumer == consumer, blocked_keys.c.key == key
    )
    if event_id is not None:
        stmt = stmt.where(blocked_keys.c.event_id == event_id)
    if released:
        stmt = stmt.where(blocked_keys.c.released_at.is_not(None))
    result: Any = await session.execute(stmt)
    return int(result.rowcount) == 1


async def park(
    session: AsyncSession, consumer: str, records: Sequence[ConsumerRecord], now: datetime
) -> None:
    """Parks the records in order and records them in the inbox as ``parked`` (so that a
    re-delivery is skipped as a duplicate); the caller has left out those already seen."""
    rows = [
        {
            "consumer": consumer,
            "key": key_text(r.key or b""),
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "event_id": record_event_id(r),
            "key_bytes": r.key,
            "value": r.value,
            "headers": _headers_json(r),
            "parked_at": now,
        }
        for r in records
    ]
    # executemany inserts in list order: the sequence numbers keep the records' order.
    await insert_rows(session, parked_events, rows)
    await insert_rows(
        session,
        inbox,
        [
            {
                "consumer": consumer,
                "event_id": r["event_id"],
                "outcome": "parked",
                "processed_at": now,
            }
            for r in rows
        ],
    )


async def parked_of(session: AsyncSession, consumer: str, key: str) -> list[dict[str, Any]]:
    stmt = (
        select(parked_events)
        .where(parked_events.c.consumer == consumer, parked_events.c.key == key)
        .order_by(parked_events.c.seq)
    )
    return [dict(r) for r in (await session.execute(stmt)).mappings().all()]


async def unpark(session: AsyncSession, consumer: str, key: str, through_seq: int) -> None:
    await session.execute(
        delete(parked_events).where(
            parked_events.c.consumer == consumer,
            parked_events.c.key == key,
            parked_events.c.seq <= through_seq,
        )
    )


async def mark_inbox(
    session: AsyncSession, consumer: str, event_ids: Sequence[str], outcome: str, now: datetime
) -> None:
    if event_ids:
        await session.execute(
            update(inbox)
            .where(inbox.c.consumer == consumer, inbox.c.event_id.in_(list(event_ids)))
            .values(outcome=outcome, processed_at=now)
        )


async def forget_inbox(session: AsyncSession, consumer: str, event_id: str) -> None:
    """A parked event that is dead-lettered must be applied when re-driven: not a duplicate."""
    await session.execute(
        delete(inbox).where(inbox.c.consumer == consumer, inbox.c.event_id == event_id)
    )


async def request_release(session: AsyncSession, consumer: str, key: str, now: datetime) -> bool:
    """Asks the consumer to apply the key's parked events without the blocking one."""
    result: Any = await session.execute(
        update(blocked_keys)
        .where(blocked_keys.c.consumer == consumer, blocked_keys.c.key == key)
        .values(released_at=now)
    )
    return int(result.rowcount) == 1
