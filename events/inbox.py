"""The consumer's inbox statements: which events a consumer has already processed.

Built once at import: constructing a statement per batch costs more CPU than running it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ARRAY, DateTime, String, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from events.prepared import Prepared
from events.tables import inbox

_PROCESSED = Prepared(
    select(inbox.c.event_id).where(
        inbox.c.consumer == bindparam("consumer"),
        inbox.c.event_id.in_(bindparam("event_ids", expanding=True)),
    )
)

# PostgreSQL: the batch's inbox rows written first, in one round trip, instead of a select
# before the handlers and an insert after them; the ids it returns are the events not seen
# before (a conflict is a duplicate: skipped, or waited for while another transaction holds
# it). One array parameter, so one prepared statement serves every batch size.
_CLAIM_INBOX_PG = text(
    "INSERT INTO choreo_inbox (consumer, event_id, outcome, processed_at) "
    "SELECT CAST(:consumer AS VARCHAR), e, 'applied', CAST(:now AS TIMESTAMPTZ) "
    "FROM unnest(CAST(:event_ids AS VARCHAR[])) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(
    bindparam("event_ids", type_=ARRAY(String)), bindparam("now", type_=DateTime(timezone=True))
)


async def processed_among(session: AsyncSession, consumer: str, event_ids: list[str]) -> set[str]:
    """Those of ``event_ids`` the consumer's inbox holds."""
    params = {"consumer": consumer, "event_ids": event_ids}
    return {row["event_id"] for row in await _PROCESSED.rows(session, params)}


async def claim_new(
    session: AsyncSession, consumer: str, event_ids: list[str], now: datetime
) -> set[str]:
    """PostgreSQL: records the events in the inbox as applied; returns those new to it."""
    params = {"consumer": consumer, "event_ids": list(dict.fromkeys(event_ids)), "now": now}
    return set((await session.execute(_CLAIM_INBOX_PG, params)).scalars())
