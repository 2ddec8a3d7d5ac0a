"""events.sqlite_wal.checkpoints_aside: a long write's own connection never checkpoints the
WAL, the checkpoint thread does, and the database file holds every row when it returns."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, text

from events.db import Database, sqlite_url
from events.sqlite_wal import checkpoints_aside

pytestmark = pytest.mark.no_database  # SQLite's WAL itself: nothing to run on PostgreSQL

md = MetaData()
blobs = Table(
    "wal_blobs",
    md,
    Column("id", Integer, primary_key=True),
    Column("body", String(1000), nullable=False),
)
ROWS = 6000  # about 1,500 pages: past the 1,000 at which a writer checkpoints itself


def rows_in_file_alone(db_file: Path, tmp_path: Path) -> int:
    """Rows the main database file holds without its WAL (a copy opened on its own)."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(db_file, copy)
    conn = sqlite3.connect(copy)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "wal_blobs" not in tables:  # even the table is only in the WAL
            return 0
        return int(conn.execute("SELECT count(*) FROM wal_blobs").fetchone()[0])
    finally:
        conn.close()


async def test_the_writer_leaves_checkpoints_to_the_thread_which_completes_them(tmp_path: Path):
    db_file = tmp_path / "long.db"
    db = Database(sqlite_url(db_file), single_connection=False)
    await db.create_all(md)
    try:
        # A checkpoint thread that waits an hour: only its last checkpoint, on leaving, runs.
        async with checkpoints_aside(db, every_s=3600) as sessions:
            async with sessions() as s:
                assert (await s.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
            for start in range(0, ROWS, 500):
                async with sessions() as s, s.begin():
                    await s.execute(
                        insert(blobs),
                        [{"id": i, "body": "x" * 800} for i in range(start, start + 500)],
                    )
            assert rows_in_file_alone(db_file, tmp_path) == 0  # all still in the WAL
        assert rows_in_file_alone(db_file, tmp_path) == ROWS
    finally:
        await db.dispose()


async def test_a_database_on_the_loop_keeps_its_own_sessions(tmp_path: Path):
    db = Database(sqlite_url(tmp_path / "inline.db"))
    try:
        async with checkpoints_aside(db) as sessions:
            assert sessions == db.session
    finally:
        await db.dispose()
