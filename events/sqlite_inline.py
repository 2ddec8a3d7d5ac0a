"""A SQLite connection for SQLAlchemy's aiosqlite dialect that runs each call on the event
loop's thread instead of handing it to a worker thread.

aiosqlite sends every call (cursor, execute, fetch, close, commit) to its own thread and
back: tens of microseconds of queueing, thread switches and GIL hand-over each, a dozen or
more per transaction. A saga step is a small transaction, so that hand-over was most of a
service's CPU. SQLite on a local file in WAL mode answers these calls in microseconds, so
running them inline costs less than the hand-over.

The one thing a worker thread bought was that a call waiting for SQLite's write lock did
not block the loop. ``events.db`` therefore gives each engine a single connection: tasks of
one process queue for it asynchronously (SQLAlchemy's pool) and never meet at the lock;
only another process holding the lock can make a call wait (``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any


class InlineCursor:
    """aiosqlite's Cursor interface over a sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _CursorContext:
    """What ``Connection.cursor()`` returns in aiosqlite: awaitable and an async context."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = InlineCursor(cursor)

    def __await__(self) -> Any:
        async def done() -> InlineCursor:
            return self._cursor

        return done().__await__()

    async def __aenter__(self) -> InlineCursor:
        return self._cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._cursor.close()


class _Calls:
    """Stands in for aiosqlite's request queue, which SQLAlchemy's ``isolation_level``
    setter feeds directly: the call runs at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to whoever awaits the future
            future.set_exception(exc)


class InlineConnection:
    """aiosqlite's Connection interface (as SQLAlchemy's dialect uses it) over sqlite3."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _Calls()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _CursorContext:
        return _CursorContext(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def connector(path: str, *, timeout: float) -> Callable[[], Any]:
    """``create_async_engine(async_creator=...)``: opens ``path`` inline."""

    async def connect() -> InlineConnection:
        # check_same_thread off: SQLAlchemy may close a connection from the garbage
        # collector's thread; every other call comes from the loop's thread.
        return InlineConnection(
            sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
        )

    return connect
