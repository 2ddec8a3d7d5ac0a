"""A long write to SQLite with its WAL checkpointed beside it instead of by the writer.

SQLite's writer checkpoints the WAL itself whenever a commit leaves more than 1,000 pages
in it, and a checkpoint ends with fsyncs that the commit waits for. A replay commits
megabytes per batch, so nearly every one of its commits checkpointed and the writer spent
part of each batch waiting on the disk. ``checkpoints_aside`` gives such a writer sessions
on one connection that never checkpoints, while a thread with its own connection runs
PASSIVE checkpoints (which never block the writer) every so often, and a last one before
returning: the database is left as checkpointed as the writer would have left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from events.db import Database, sqlite_file

# SQLite's own default, which every connection of the platform runs with.
DEFAULT_AUTOCHECKPOINT = 1000

Sessions = Callable[[], AsyncSession]


def writes_aside(db: Database) -> bool:
    """Whether ``checkpoints_aside`` gives the write a connection of its own: a SQLite file
    with a pool of connections."""
    return db.is_sqlite and sqlite_file(db.url) is not None and not db.one_connection


@contextlib.asynccontextmanager
async def checkpoints_aside(db: Database, every_s: float = 0.2) -> AsyncIterator[Sessions]:
    """Sessions for a long write. On a SQLite file with a pool of connections, they share
    one connection that does not checkpoint, and a thread checkpoints meanwhile; elsewhere
    (PostgreSQL, a SQLite engine of one connection) they are the database's own.
    Databases the write attached to that connection (a replay's hand-over files) are
    detached before it goes back to the pool."""
    path = sqlite_file(db.url)
    if path is None or not writes_aside(db):
        yield db.session
        return
    async with db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("PRAGMA wal_autocheckpoint=0")
        stop = threading.Event()
        checkpointer = asyncio.ensure_future(asyncio.to_thread(_checkpoint, path, stop, every_s))
        try:
            yield async_sessionmaker(bind=conn, expire_on_commit=False)
        finally:
            stop.set()
            with contextlib.suppress(sqlite3.Error):
                await raw.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT}")
                async with raw.execute("PRAGMA database_list") as cursor:
                    attached = [row[1] for row in await cursor.fetchall()]
                for name in attached:
                    if name not in ("main", "temp"):
                        await raw.execute(f'DETACH DATABASE "{name}"')
            await checkpointer


def _checkpoint(path: str, stop: threading.Event, every_s: float) -> None:
    """Checkpoints until ``stop`` is set, then once more."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        while not stop.wait(every_s):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()
