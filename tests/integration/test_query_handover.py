"""Rows a replay reader hands to the writer in a SQLite file (``services.query.handover``):
each batch arrives as written, a known key fails (or is skipped) as on the executemany path,
and the file is detached when the write's connection goes back to the pool."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, func, select, text
from sqlalchemy.exc import IntegrityError

from events.db import Database, sqlite_url
from events.sqlite_wal import checkpoints_aside
from services.query import sql
from services.query.handover import Handover, read_rows

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


def test_batches_read_back_as_written_in_their_order(tmp_path: Path):
    rows = some_rows(50)
    handover = Handover(tmp_path / "reader-0.db")
    try:
        first, second = handover.append("t", rows[:20]), handover.append("t", rows[20:])
        assert handover.append("t", []).count == 0
    finally:
        handover.close()
    assert (first.first, first.count, second.first, second.count) == (1, 20, 21, 30)
    assert read_rows(first) == rows[:20]
    assert read_rows(second) == rows[20:]


async def test_the_writer_copies_each_batch_and_detaches_the_file_when_done(tmp_path: Path):
    db = Database(sqlite_url(tmp_path / "writer.db"), single_connection=False)
    await db.create_all(md)
    rows = some_rows(300)
    # Through a link: SQLite lists the file by its resolved path, and more batches than it
    # can attach files at once (10) must still take one attachment.
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    handover = Handover(tmp_path / "link" / "reader-1.db")
    try:
        async with checkpoints_aside(db) as sessions:
            for part in [rows[i : i + 25] for i in range(0, 300, 25)]:
                # Appended while the writer holds the file attached (WAL: no waiting).
                handed = handover.append("orders", part)
                async with sessions() as s, s.begin():
                    await s.run_sync(lambda sync, h=handed: sql.insert_file(sync, orders, h))
            async with sessions() as s:
                stored = (await s.execute(select(orders))).all()
                listed = (await s.execute(text("PRAGMA database_list"))).all()
            assert sorted(map(tuple, stored)) == sorted(rows)
            assert [r[2] for r in listed if r[1] not in ("main", "temp")] == [
                str(tmp_path / "reader-1.db")
            ]
            # A known key: refused by a plain insert, skipped by an insert of new rows only.
            with pytest.raises(IntegrityError):
                async with sessions() as s, s.begin():
                    await s.run_sync(lambda sync: sql.insert_file(sync, orders, handed))
            again = handover.append("orders", [*rows[:5], *some_rows(2)])
            async with sessions() as s, s.begin():
                await s.run_sync(lambda sync: sql.insert_file(sync, orders, again, new_only=True))
            async with sessions() as s:
                assert (await s.execute(select(func.count()).select_from(orders))).scalar() == 302
        async with db.session() as s:  # the pooled connection: only its own databases
            listed = (await s.execute(text("PRAGMA database_list"))).all()
        assert {r[1] for r in listed} <= {"main", "temp"}
    finally:
        handover.close()
        await db.dispose()
