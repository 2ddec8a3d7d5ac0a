"""events.bulk.insert_rows writes exactly what SQLAlchemy's insert would, on each backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, select

from events.bulk import insert_rows
from events.db import Database
from events.tables import inbox
from events.tables import metadata as platform_metadata

md = MetaData()
things = Table(
    "bulk_things",
    md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(32), nullable=False),
    Column("kind", String(16), nullable=False, default="plain"),  # a Python-side default
    Column("seen_at", DateTime(timezone=True)),
)


async def test_rows_round_trip_through_the_fast_path_and_the_fallback(
    database_url: Callable[[str], str],
) -> None:
    db = Database(database_url("bulk"))
    try:
        await db.create_all(platform_metadata, md)
        at = datetime(2026, 11, 23, 15, 0, 0, 123456, tzinfo=UTC)
        inbox_rows = [
            {"consumer": "c", "event_id": f"e{i}", "outcome": "applied", "processed_at": at}
            for i in range(50)
        ]
        full = [{"name": "a", "kind": "special", "seen_at": at + timedelta(seconds=1)}]
        defaulted = [{"name": "b", "seen_at": None}, {"name": "c", "seen_at": at}]
        mixed = [{"name": "d", "kind": "k"}, {"name": "e", "seen_at": at}]
        async with db.session() as session, session.begin():
            await insert_rows(session, inbox, inbox_rows)
            await insert_rows(session, things, full)
            await insert_rows(session, things, defaulted)  # needs the column default
            await insert_rows(session, things, mixed)  # rows with different keys
            await insert_rows(session, things, [])
        async with db.session() as session:
            got = (await session.execute(select(inbox).order_by(inbox.c.event_id))).all()
            rows = (await session.execute(select(things).order_by(things.c.name))).all()
        assert sorted(r.event_id for r in got) == sorted(f"e{i}" for i in range(50))
        assert {r.processed_at.replace(tzinfo=UTC) for r in got} == {at}
        assert [(r.name, r.kind) for r in rows] == [
            ("a", "special"),
            ("b", "plain"),
            ("c", "plain"),
            ("d", "k"),
            ("e", "plain"),
        ]
        assert rows[0].seen_at.replace(tzinfo=UTC) == at + timedelta(seconds=1)
        assert rows[1].seen_at is None
    finally:
        await db.dispose()
