"""The query service's SQLite database: a new file gets the store's page size (before WAL
mode fixes it), an existing file keeps its own and still opens, and every connection has the
replay-sized page cache."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from events.db import sqlite_url
from events.tables import metadata as platform_metadata
from services.query.store import SQLITE_CACHE_KIB, SQLITE_PAGE_SIZE, open_database

pytestmark = pytest.mark.no_database  # SQLite's own settings: nothing to run on PostgreSQL


async def pragmas(path: Path) -> tuple[int, str, int]:
    db = open_database(sqlite_url(path))
    try:
        await db.create_all(platform_metadata)
        async with db.session() as s:
            size = (await s.execute(text("PRAGMA page_size"))).scalar_one()
            mode = (await s.execute(text("PRAGMA journal_mode"))).scalar_one()
            cache = (await s.execute(text("PRAGMA cache_size"))).scalar_one()
        return size, mode, cache
    finally:
        await db.dispose()


async def test_a_new_database_gets_the_query_page_size_in_wal_mode(tmp_path: Path):
    assert SQLITE_PAGE_SIZE != 4096  # SQLite's default: the test would prove nothing
    assert await pragmas(tmp_path / "new.db") == (SQLITE_PAGE_SIZE, "wal", -SQLITE_CACHE_KIB)


async def test_an_existing_database_keeps_its_page_size(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
    conn.close()
    assert await pragmas(path) == (4096, "wal", -SQLITE_CACHE_KIB)
