"""Idempotency keys: a request's key, what it asked and the answer it got, stored in the SAME
transaction as its effect, so a repeated request is answered from the row and acts once.

The key is the table's primary key, inserted with the answer after the effect, in its
transaction: a repeat (or a request racing the first with one key) does the effect too, but
its insert of the key fails (on PostgreSQL after waiting on the unique index for the first
to commit), its transaction rolls back, and it answers from the stored row. New requests,
nearly all of them, thus pay one statement for the key, repeats a wasted effect. The same
key with another request is a 422.

Hand-written because the point is WHERE the answer is stored: the Idempotency-Key packages
on PyPI (fastapi-idempotency, fastapi-idempotency-key, asgi-idempotency-header, all 0.x)
are middlewares with a store of their own around the handler, outside its transaction, so
a crash between the effect's commit and their record would act twice on the retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database

metadata = MetaData()

MAX_KEY_LENGTH = 255

keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # sha256 of method, path and body
    Column("status", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A request that lost a race (its key, or a unique row of its effect, taken by a request
# that committed first) is run again this many times in all; the next run sees the winner.
RACE_RUNS = 3

KEY_REUSED = "this Idempotency-Key was used for a different request"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


Act = Callable[[AsyncSession], Awaitable[tuple[int, dict[str, Any]]]]
"""The request's work inside the key's transaction: its status and JSON body. A refusal
(402, 404, 409, 422) is an answer too, stored and replayed like a success."""


def fingerprint(method: str, path: str, body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def once(db: Database, key: str, request: str, act: Act) -> Answer:
    """``act``'s answer for the first request with ``key``; the stored one for a repeat of
    the same ``request`` (a fingerprint); a 422 for the key with another request."""
    for run in range(RACE_RUNS):
        try:
            async with db.session() as session, session.begin():
                status, body = await act(session)
                await session.execute(
                    keys.insert().values(
                        key=key, fingerprint=request, status=status, body=body, created_at=_now()
                    )
                )
            return Answer(status, body)
        except IntegrityError:
            # The key was taken (its effect rolled back with ours), or a unique row of the
            # effect was (a racing request under another key): answer from the key, or run
            # again against what the winner left.
            async with db.session() as session:
                found = await _stored(session, key, request)
            if found is not None:
                return found
            if run == RACE_RUNS - 1:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


async def _stored(session: AsyncSession, key: str, request: str) -> Answer | None:
    row = (
        await session.execute(
            select(keys.c.fingerprint, keys.c.status, keys.c.body).where(keys.c.key == key)
        )
    ).first()
    if row is None:
        return None
    if row.fingerprint != request:
        return Answer(422, {"error": KEY_REUSED})
    return Answer(row.status, dict(row.body), replayed=True)


def _now() -> datetime:
    return datetime.now(UTC)
