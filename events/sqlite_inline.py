"""A SQLite connection for SQLAlchemy's aiosqlite dialect that runs each call on the event
loop's thread instead of handing it to a worker thread.

aiosqlite sends every call (cursor, execute, fetch, close, commit) to its own thread and
back: tens of microseconds of queueing, thread switches and GIL hand-over each, a dozen or
more per transaction. A saga step is a small transaction, so that hand-over was most of a
service's CPU. SQLite on a local file in WAL mode answers these calls in microseconds, so
running them inline costs less than the hand-over.

The one thing a worker thread bought was that a call waiting for SQLite's write lock did
not block the loop. Here a call that finds the database locked (another connection, in this
process or another, is writing) gives up at once and is retried after an asynchronous
pause, until the connection's timeout: the loop keeps running, so the writer it waits for
can finish even when that writer is a task of the same loop. SQLite allows retrying a
statement that returned SQLITE_BUSY. ``events.db`` also gives each engine a single
connection, so the tasks of one engine queue for it in SQLAlchemy's pool instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_FIRST_PAUSE_S = 0.001
_MAX_PAUSE_S = 0.05


async def _when_unlocked(timeout_s: float, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, retried with growing asynchronous pauses while the database is
    locked, for up to ``timeout_s``."""
    pause = _FIRST_PAUSE_S
    deadline: float | None = None
    while True:
        try:
            return call(*args)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _BUSY:
                raise
            now = asyncio.get_running_loop().time()
            deadline = deadline if deadline is not None else now + timeout_s
            if now >= deadline:
                raise
            await asyncio.sleep(pause)  # let the writer holding the lock run
            pause = min(pause * 2, _MAX_PAUSE_S)


class InlineCursor:
    """aiosqlite's Cursor interface over a sqlite3 cursor."""

    def __init__(self, cursor: sqlite3.Cursor, timeout_s: float) -> None:
        self._cursor = cursor
        self._timeout_s = timeout_s

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
        await _when_unlocked(self._timeout_s, self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        rows = parameters if isinstance(parameters, list) else list(parameters)
        await _when_unlocked(self._timeout_s, self._cursor.executemany, sql, rows)
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

    def __init__(self, cursor: InlineCursor) -> None:
        self._cursor = cursor

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

    def __init__(self, conn: sqlite3.Connection, timeout_s: float) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._timeout_s = timeout_s
        self._tx = _Calls()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _CursorContext:
        return _CursorContext(InlineCursor(self._conn.cursor(), self._timeout_s))

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        return await InlineCursor(self._conn.cursor(), self._timeout_s).execute(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        cursor = InlineCursor(self._conn.cursor(), self._timeout_s)
        return await cursor.executemany(sql, parameters)

    async def commit(self) -> None:
        await _when_unlocked(self._timeout_s, self._conn.commit)

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
        # collector's thread; every other call comes from the loop's thread. timeout=0:
        # never wait for a lock inside SQLite (that would block the loop); see above.
        conn = sqlite3.connect(path, timeout=0, check_same_thread=False, isolation_level=None)
        return InlineConnection(conn, timeout)

    return connect
