"""Database access: one async engine per service, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: the server or the connection failed (a restart, a
    cut connection, a lock), not the statement."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# Any constant that names the lock; only create_all takes it.
CREATE_TABLES_LOCK = 0x63686F7265  # "chore"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL; None for an in-memory database."""
    path = make_url(url).database
    return path if path and path != ":memory:" else None


def make_engine(
    url: str, *, echo: bool = False, single_connection: bool = True, page_size: int | None = None
) -> AsyncEngine:
    """SQLite runs through aiosqlite, as SQLAlchemy ships it. ``single_connection`` gives a
    SQLite engine one connection: the tasks of a service queue for it in SQLAlchemy's pool,
    on the loop, instead of meeting at SQLite's write lock, where a waiting writer sleeps in
    SQLite's busy handler for milliseconds at a time.
    ``single_connection=False`` keeps a pool of connections: for a writer of few, large
    statements (a projection's batches), beside which readers should keep being served.
    ``page_size``: SQLite's page size for a database file created from now on (an existing
    file keeps its own)."""
    if is_sqlite(url):
        # A writer waiting for another's lock waits in aiosqlite's thread (busy_timeout),
        # so the loop keeps running, even when the lock's holder is a task of this loop.
        pool: dict[str, Any] = {}
        if single_connection and sqlite_file(url) is not None:  # (":memory:" has its own pool)
            pool = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 120}
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, **pool)
        _tune_sqlite(engine, busy_timeout_ms=30_000, page_size=page_size)
        return engine
    return create_async_engine(url, echo=echo, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _check_sqlite_path(path: str) -> None:
    """The usual reasons SQLite cannot open a file, raised with the path before aiosqlite
    tries: aiosqlite's failed connect queues its thread's stop on the event loop, and when a
    command then exits at once the closed loop makes that thread print a traceback after the
    command's one-line error."""
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a directory, not a SQLite file", path)
    if not file.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(file.parent))


def _tune_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int, page_size: int | None) -> None:
    path = sqlite_file(str(engine.url))
    if path is not None:

        @event.listens_for(engine.sync_engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            _check_sqlite_path(path)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if page_size is not None:
            # Before WAL mode, which writes a new file's header: the size is fixed then.
            cur.execute(f"PRAGMA page_size={int(page_size)}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a WAL reader that later writes fails with
        # SQLITE_BUSY without waiting if another writer committed in between. Straight to
        # aiosqlite (run_async: SQLAlchemy's documented way to await the driver in an
        # event): one trip to its thread, where SQLAlchemy's cursor takes three.
        try:
            conn.connection.dbapi_connection.run_async(
                lambda driver: driver.execute_fetchall("BEGIN IMMEDIATE")
            )
        except sqlite3.Error as exc:
            raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc


class Database:
    """An engine and its session factory; created at a service's entrypoint."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        single_connection: bool = True,
        page_size: int | None = None,
    ) -> None:
        self.url = url
        # A SQLite file served through one connection (see make_engine).
        self.one_connection = single_connection and is_sqlite(url) and sqlite_file(url) is not None
        self.engine = make_engine(
            url, echo=echo, single_connection=single_connection, page_size=page_size
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def create_all(self, *metadatas: MetaData) -> None:
        """Creates the tables that are missing. On PostgreSQL the instances of a service that
        start together on one fresh database take turns (a transaction-scoped advisory lock):
        concurrent CREATE TABLEs of one name fail on the catalog's unique index, not wait."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_TABLES_LOCK}
                )
            for md in metadatas:
                await conn.run_sync(md.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
