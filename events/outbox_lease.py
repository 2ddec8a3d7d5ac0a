"""PostgreSQL: the lease that lets one relay publish per outbox database.

A session-level advisory lock (``pg_try_advisory_lock``) held on a connection of its own,
in autocommit, which also runs the relay's selects and marks (one round trip each, no
transaction: the old claim held rows with ``FOR UPDATE SKIP LOCKED`` in a transaction open
across the send, plus a second select per key, and committed with an fsync per batch).
Another relay of the same database is a standby: it tries for the lease every
``retry_s``. Losing the connection loses the lease (the server releases the lock): the
next statement fails, and the relay publishes nothing until it holds the lease again;
meanwhile a standby may take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy import BigInteger, bindparam, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.db import Database

log = logging.getLogger(__name__)

LEASE_KEY = 0x63686F72656F  # "choreo": the advisory lock of one outbox database
_TRY_LEASE = select(func.pg_try_advisory_lock(bindparam("key", type_=BigInteger)))
_RELEASE_LEASE = select(func.pg_advisory_unlock(bindparam("key", type_=BigInteger)))


class LeaseLost(Exception):
    """The relay's lease connection went away between two statements: publish nothing more
    until the lease is held again."""


class OutboxLease:
    def __init__(self, db: Database, retry_s: float) -> None:
        self.db = db
        self.retry_s = retry_s
        self.standby = False  # another relay holds the lease
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()  # the relay's monitor and its loop share the connection
        self._next_try = 0.0

    @property
    def held(self) -> bool:
        """This relay holds the lease (as far as it knows)."""
        return self._conn is not None

    def try_now(self) -> None:
        """The next ``take`` tries for the lease even if it tried a moment ago."""
        self._next_try = 0.0

    async def take(self) -> bool:
        """Tries for the lease, at most every ``retry_s`` (a standby's wake-ups cost
        nothing); True when this call took it."""
        loop = asyncio.get_running_loop()
        if self._conn is not None or loop.time() < self._next_try:
            return False
        self._next_try = loop.time() + self.retry_s
        conn = await self.db.engine.connect()
        try:
            # Autocommit: each statement is one round trip, no BEGIN/COMMIT around it; the
            # session-level advisory lock outlives every statement.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            held = (await conn.execute(_TRY_LEASE, {"key": LEASE_KEY})).scalar_one()
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        if not held:
            await conn.close()
            self.standby = True
            return False
        self._conn = conn
        self.standby = False
        log.info("outbox relay: holds the outbox lease, publishing")
        return True

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """The lease's connection for one statement. A failure drops the lease (the server
        released the lock if the connection is gone)."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise LeaseLost("the outbox lease was lost")
            try:
                yield conn
            except DBAPIError:
                await self._drop(broken=True)
                raise

    async def release(self) -> None:
        """Hands the lease back (the relay closes or has drained)."""
        async with self._lock:
            await self._drop()

    async def _drop(self, *, broken: bool = False) -> None:
        conn, self._conn = self._conn, None
        self._next_try = 0.0
        if conn is None:
            return
        if not broken:
            try:
                await conn.execute(_RELEASE_LEASE, {"key": LEASE_KEY})
                await conn.close()  # back to the pool, without the lock
                return
            except DBAPIError:
                pass
        # Closing the server connection releases the lock with it.
        with contextlib.suppress(DBAPIError, OSError):
            await conn.invalidate()
        with contextlib.suppress(DBAPIError, OSError):
            await conn.close()
