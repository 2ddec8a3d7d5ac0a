"""SQLite engines: a locked database is waited for in aiosqlite's thread, without blocking
the loop, so writers of one process on one file never deadlock; the driver connection is
aiosqlite's own (no imitation of its private parts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
from sqlalchemy import text

from events.db import Database, sqlite_url


async def test_two_engines_on_one_file_take_turns_while_a_writer_is_suspended(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    first, second = Database(url), Database(url)
    try:
        async with first.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (writer TEXT, n INTEGER)")
        order: list[str] = []
        holding, fast_trying, loop_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()
        ticks = 0

        async def slow_writer() -> None:
            async with first.session() as session, session.begin():
                await session.execute(text("INSERT INTO t VALUES ('slow', 1)"))
                holding.set()
                await fast_trying.wait()
                # Suspended while holding SQLite's write lock, until the loop has run other
                # tasks many times while the second writer waits in aiosqlite's thread.
                await loop_ran.wait()
                order.append("slow")

        async def fast_writer() -> None:
            await holding.wait()
            fast_trying.set()
            async with second.session() as session, session.begin():
                await session.execute(text("INSERT INTO t VALUES ('fast', 2)"))
                order.append("fast")

        async def ticker() -> None:  # proves the loop keeps running while fast_writer waits
            nonlocal ticks
            while len(order) < 2:
                ticks += 1
                if ticks >= 100 and fast_trying.is_set():
                    loop_ran.set()
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(slow_writer(), fast_writer(), ticker()), 10)
        assert order == ["slow", "fast"]  # the second writer waited for the first's commit
        assert ticks >= 100
        async with second.session() as session:
            rows = (await session.execute(text("SELECT writer FROM t ORDER BY n"))).all()
        assert [r.writer for r in rows] == ["slow", "fast"]
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_driver_connection_is_aiosqlites_own(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "own.db"))
    try:
        async with db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.driver_connection, aiosqlite.Connection)
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        await db.dispose()
