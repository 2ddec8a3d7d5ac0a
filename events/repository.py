"""What a service's repository is built from: the session it runs in (``Repository``) and
the statements it runs on one row by key (``KeyedRows``: get, lock, insert, update),
prepared once at import (``events.prepared``); a request's row recorded once
(``InsertOnce``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from events.prepared import Prepared, Row

_ROW_KEY = "row_key"  # not a column name: SQLAlchemy keeps those for an UPDATE's SET clause


class Repository:
    """Base of a service's repository: its statements, run in one session (a unit of
    work's, or a read's)."""

    __slots__ = ("session",)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class KeyedUpdate(Prepared):
    """``UPDATE table SET <the columns a call gives> WHERE key = <the row's key>`` (and any
    ``conditions``): one statement for every set of columns a repository changes."""

    def __init__(self, key: Column[Any], *conditions: Any) -> None:
        super().__init__(update(key.table).where(key == bindparam(_ROW_KEY), *conditions))

    async def set(self, session: AsyncSession, key: Any, /, **values: Any) -> int:
        """Sets ``values`` on the row whose key is ``key``; returns the rows it matched."""
        values[_ROW_KEY] = key
        return await self.run(session, values)


class KeyedRows:
    """A table's rows by their key (``key``, a column unique in its table)."""

    def __init__(self, key: Column[Any]) -> None:
        by_key = select(key.table).where(key == bindparam(_ROW_KEY))
        self._get = Prepared(by_key)
        # FOR UPDATE: a no-op on SQLite, whose transactions hold the write lock already.
        self._lock = Prepared(by_key.with_for_update())
        self._insert = Prepared(insert(key.table))
        self._update = KeyedUpdate(key)

    async def get(self, session: AsyncSession, key: Any, *, lock: bool = False) -> Row | None:
        """The row whose key is ``key`` (``lock``: locked until the transaction ends)."""
        return await (self._lock if lock else self._get).first(session, {_ROW_KEY: key})

    async def insert(self, session: AsyncSession, row: Mapping[str, Any]) -> None:
        await self._insert.run(session, row)

    async def set(self, session: AsyncSession, key: Any, /, **values: Any) -> int:
        """Sets ``values`` on the row whose key is ``key``; returns the rows it matched."""
        return await self._update.set(session, key, **values)


class InsertOnce:
    """Rows recorded once by their key (an applied request's id, so that the same request
    sent twice, even as two events, counts once)."""

    def __init__(self, key: Column[Any]) -> None:
        self._key = key.key
        self._seen = Prepared(select(key).where(key == bindparam(_ROW_KEY)))
        self._insert = Prepared(insert(key.table))

    async def add(self, session: AsyncSession, row: Mapping[str, Any]) -> bool:
        """Inserts ``row`` unless its key is there already; False then."""
        if await self._seen.first(session, {_ROW_KEY: row[self._key]}) is not None:
            return False
        await self._insert.run(session, row)
        return True
