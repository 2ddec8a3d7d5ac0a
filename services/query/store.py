"""The query service's database: a writer for the projection, a reader for the API, and the
process settings that keep a projection fast.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from events.db import Database, is_sqlite
from events.tables import projections

# 64 MB of page cache (SQLite's default is 2 MB): a replay's batch touches thousands of
# index pages spread by random order ids; re-reading them from the OS per batch costs more
# than the memory.
SQLITE_CACHE_KIB = 65536
# 16 KB pages (SQLite's default is 4 KB) for a new query database: a replay inserts its
# timeline through a key index spread by random order ids, and with pages four times as
# large it touches fewer of them (measured in the commit that set it: the replay's writer
# cheaper, the live projection no slower).
SQLITE_PAGE_SIZE = 16384


def open_database(url: str) -> Database:
    """The projection's (writing) database, with a page cache and pages sized for replays."""
    # single_connection=False: large batches, and the API keeps answering meanwhile.
    db = Database(url, single_connection=False, page_size=SQLITE_PAGE_SIZE)
    tune_sqlite(db)
    return db


def tune_sqlite(db: Database) -> None:
    """Sizes SQLite's page cache on every connection the database opens from now on."""
    if db.is_sqlite:

        @event.listens_for(db.engine.sync_engine, "connect")
        def _cache(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.close()


class Reader:
    """Sessions for the API's reads.

    ``events.db`` starts every SQLite transaction with ``BEGIN IMMEDIATE`` (right for
    writers), so a read through it would queue behind the projection's write lock for the
    length of a batch. The reader's connections are read-only (``query_only``) and never
    begin a write transaction: in WAL mode each query reads a consistent snapshot while the
    projection writes. PostgreSQL needs nothing special.
    """

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine
        if is_sqlite(url):
            self.engine = create_async_engine(url, connect_args={"timeout": 30})

            @event.listens_for(self.engine.sync_engine, "connect")
            def _read_only(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA query_only=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        else:
            self.engine = create_async_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def active_generation(self, name: str) -> int | None:
        return (await self.state(name))[0]

    async def state(self, name: str) -> tuple[int | None, int | None]:
        """(active, building) generations of a projection; (None, None) before its start."""
        query = select(projections.c.active_generation, projections.c.building_generation)
        async with self.session() as s:
            row = (await s.execute(query.where(projections.c.projection == name))).first()
        if row is None:
            return None, None
        return int(row[0]), (None if row[1] is None else int(row[1]))

    async def dispose(self) -> None:
        await self.engine.dispose()
