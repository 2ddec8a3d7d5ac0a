"""events.prepared.Prepared runs a statement as session.execute would: same rows, same
row counts, inside the session's transaction, with SQLAlchemy's exceptions, on each
backend (SQLite through aiosqlite's own connection, PostgreSQL through session.execute)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import aiosqlite
import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from events.db import Database
from events.prepared import Prepared, sqlite_driver
from events.repository import InsertOnce, KeyedUpdate

md = MetaData()
items = Table(
    "prepared_items",
    md,
    Column("item_id", String(36), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("seen_at", DateTime(timezone=True)),
    Column("note", String(32), nullable=True, default="defaulted"),  # a constant default
)
stamped = Table(
    "prepared_stamped",
    md,
    Column("item_id", String(36), primary_key=True),
    Column("stamp", String(32), nullable=False, default=lambda: "computed"),  # a function
)

_INSERT = Prepared(insert(items))
_ONE = Prepared(select(items).where(items.c.item_id == bindparam("item_id")).with_for_update())
_SOME = Prepared(
    select(items.c.item_id, items.c.count)
    .where(items.c.item_id.in_(bindparam("ids", expanding=True)))
    .order_by(items.c.item_id)
)
_SINCE = Prepared(
    select(items.c.item_id)
    .where(items.c.item_id.in_(bindparam("ids", expanding=True)))
    .where(items.c.seen_at >= bindparam("since"))
    .order_by(items.c.item_id)
)
_BUMP = Prepared(
    update(items)
    .where(items.c.item_id == bindparam("b_item_id"))
    .values(count=items.c.count + bindparam("by"), seen_at=None)
)


def _row(item_id: str, count: int, at: datetime | None) -> dict[str, object]:
    return {"item_id": item_id, "count": count, "flag": count % 2 == 0, "seen_at": at}


@pytest.fixture
async def db(database_url: Callable[[str], str]) -> Database:
    database = Database(database_url("prepared"))
    await database.create_all(md)
    yield database  # type: ignore[misc]
    await database.dispose()


async def test_rows_and_counts_match_session_execute(db: Database) -> None:
    at = datetime(2026, 12, 4, 17, 0, 0, 654321, tzinfo=UTC)
    ids = sorted(str(uuid.uuid4()) for _ in range(4))
    async with db.session() as s, s.begin():
        for i, item_id in enumerate(ids):
            await _INSERT.run(s, {**_row(item_id, i, at), "note": f"n{i}"})
        one = await _ONE.first(s, {"item_id": ids[1]})
        expected = (await s.execute(_ONE.statement, {"item_id": ids[1]})).mappings().first()
        assert one == dict(expected or {})
        assert one is not None and one["flag"] is False and one["count"] == 1
        assert one["seen_at"].replace(tzinfo=UTC) == at
        assert await _ONE.first(s, {"item_id": "missing"}) is None
        some = await _SOME.rows(s, {"ids": [ids[3], ids[0], "missing"]})
        assert some == [{"item_id": ids[0], "count": 0}, {"item_id": ids[3], "count": 3}]
        assert await _SOME.rows(s, {"ids": []}) == []  # an empty IN list
        # An IN list beside another bind whose type processes its value (a datetime).
        since = {"ids": [ids[2], ids[0]], "since": at}
        expanded = (await s.execute(_SINCE.statement, since)).mappings().all()
        assert await _SINCE.rows(s, since) == [dict(r) for r in expanded]
        assert len(expanded) == 2
        assert await _BUMP.run(s, {"b_item_id": ids[2], "by": 40}) == 1
        assert await _BUMP.run(s, {"b_item_id": "missing", "by": 1}) == 0
        # A missing column takes its Python-side default, as with session.execute: a
        # constant bound as it is, a function's value through SQLAlchemy.
        await _INSERT.run(s, _row("defaulted", 7, None))
        await Prepared(insert(stamped)).run(s, {"item_id": "stamped"})
    async with db.session() as s:
        bumped = await _ONE.first(s, {"item_id": ids[2]})
        defaulted = await _ONE.first(s, {"item_id": "defaulted"})
        stamp = await Prepared(select(stamped.c.stamp)).rows(s, {})
    assert bumped is not None and bumped["count"] == 42 and bumped["seen_at"] is None
    assert defaulted is not None and defaulted["note"] == "defaulted"
    assert stamp == [{"stamp": "computed"}]


async def test_writes_belong_to_the_sessions_transaction(db: Database) -> None:
    async with db.session() as s:
        async with s.begin():
            await _INSERT.run(s, _row("kept", 1, None))
        async with s.begin():  # a second transaction of the same session
            await _INSERT.run(s, _row("undone", 2, None))
            assert await _ONE.first(s, {"item_id": "undone"}) is not None
            await s.rollback()
    async with db.session() as s:
        found = await _SOME.rows(s, {"ids": ["kept", "undone"]})
    assert found == [{"item_id": "kept", "count": 1}]


async def test_a_failing_statement_raises_sqlalchemys_error(db: Database) -> None:
    async with db.session() as s, s.begin():
        await _INSERT.run(s, {**_row("twice", 1, None), "note": "first"})
        with pytest.raises(IntegrityError):
            await _INSERT.run(s, {**_row("twice", 2, None), "note": "second"})


async def test_on_sqlite_it_runs_on_aiosqlites_own_connection(db: Database) -> None:
    async with db.session() as s, s.begin():
        driver, dialect = await sqlite_driver(s)
        if db.is_sqlite:
            assert isinstance(driver, aiosqlite.Connection)
            assert driver is (await (await s.connection()).get_raw_connection()).driver_connection
        else:
            assert driver is None and dialect.name == "postgresql"


_SET = KeyedUpdate(items.c.item_id)
_SET_UNSEEN = KeyedUpdate(items.c.item_id, items.c.seen_at.is_(None))
_ONCE = InsertOnce(items.c.item_id)


async def test_keyed_update_sets_only_the_columns_given(db: Database) -> None:
    at = datetime(2026, 12, 6, 6, 0, 0, 123000, tzinfo=UTC)
    async with db.session() as s, s.begin():
        await _INSERT.run(s, {**_row("a", 1, None), "note": "kept"})
        await _INSERT.run(s, _row("b", 2, None))
        assert await _SET.set(s, "a", count=10) == 1
        assert await _SET.set(s, "a", flag=True, seen_at=at) == 1  # another set of columns
        assert await _SET.set(s, "missing", count=1) == 0
        # The extra condition: a row already seen is not matched.
        assert await _SET_UNSEEN.set(s, "a", count=99) == 0
        assert await _SET_UNSEEN.set(s, "b", count=20) == 1
    async with db.session() as s:
        a = await _ONE.first(s, {"item_id": "a"})
        b = await _ONE.first(s, {"item_id": "b"})
    assert a is not None and (a["count"], a["flag"], a["note"]) == (10, True, "kept")
    assert a["seen_at"].replace(tzinfo=UTC) == at
    assert b is not None and (b["count"], b["flag"]) == (20, True)


async def test_insert_once_records_a_key_once(db: Database) -> None:
    async with db.session() as s, s.begin():
        assert await _ONCE.add(s, _row("once", 1, None)) is True
        assert await _ONCE.add(s, _row("once", 2, None)) is False  # the same key again
    async with db.session() as s:
        rows = await _SOME.rows(s, {"ids": ["once"]})
    assert rows == [{"item_id": "once", "count": 1}]  # the first row, untouched
