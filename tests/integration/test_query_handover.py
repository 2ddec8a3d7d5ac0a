"""Order rows a replay reader hands to the writer in a SQLite file (``services.query.handover``):
they arrive as written, a second copy of an order fails as the executemany path does, and the
file is detached when the write's connection goes back to the pool."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select, text
from sqlalchemy.exc import IntegrityError

from events.db import Database, sqlite_url
from events.sqlite_wal import checkpoints_aside
from services.query import sql
from services.query.handover import read_rows, write_rows

pytestmark = pytest.mark.no_database  # SQLite files attached to SQLite: nothing on PostgreSQL

md = MetaData()
orders = Table(
    "handover_orders",
    md,
    Column("order_id", String(36), primary_key=True),
    Column("note", String(64)),
    Column("cents", BigInteger),
)


def some_rows(n: int) -> list[tuple[str, str | None, int | None]]:
    notes = ["plain", "ünïcødé €", None, "x" * 64]
    return [
        (str(uuid.uuid4()), notes[i % 4], None if i % 5 == 0 else i * 1_000_000_007)
        for i in range(n)
    ]


def test_rows_read_back_as_written_in_their_order(tmp_path: Path):
    rows = some_rows(50)
    handed = write_rows(str(tmp_path), "orders-0", rows)
    assert handed.count == 50
    assert read_rows(handed) == rows


async def test_the_writer_copies_the_rows_and_detaches_the_file_when_done(tmp_path: Path):
    db = Database(sqlite_url(tmp_path / "writer.db"), sqlite_on_loop=False)
    await db.create_all(md)
    rows = some_rows(300)
    handed = write_rows(str(tmp_path), "orders-1", rows)
    try:
        async with checkpoints_aside(db) as sessions:
            async with sessions() as s, s.begin():
                await s.run_sync(lambda sync: sql.insert_file(sync, orders, handed))
            async with sessions() as s:
                stored = (await s.execute(select(orders))).all()
                listed = (await s.execute(text("PRAGMA database_list"))).all()
            assert sorted(map(tuple, stored)) == sorted(rows)
            assert str(tmp_path / "orders-1.db") in {r[2] for r in listed}
            # The same orders again: refused, as a plain insert of known keys is.
            with pytest.raises(IntegrityError):
                async with sessions() as s, s.begin():
                    await s.run_sync(lambda sync: sql.insert_file(sync, orders, handed))
        async with db.session() as s:  # every pooled connection: only its own databases
            listed = (await s.execute(text("PRAGMA database_list"))).all()
        assert {r[1] for r in listed} <= {"main", "temp"}
    finally:
        await db.dispose()
