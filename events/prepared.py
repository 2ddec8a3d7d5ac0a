"""Hot statements of the handlers and the platform: ``Prepared(stmt).rows/first/run``, the
seam they call on every backend; on SQLite it runs them on aiosqlite's own connection.

Why it stays: on SQLite every driver call is a trip to aiosqlite's worker thread and back
(a thread wake-up, a future, a loop wake-up), and ``session.execute`` makes three or four of
them per statement (cursor, execute, fetch, close) on top of its own work: compiled-cache
lookup, execution context, parameter and result processing, the greenlet crossing. A saga
step runs several statements per event, so at steady load those trips were a large share of
a service's CPU (bench/README.md, "SQLite through public APIs only", has the A/B figures).
Here a statement is compiled once per dialect and parameter-key set, as ``Session.execute``
would compile it, the bind and result processors of its column types are looked up once,
and it runs in one trip (``execute_fetchall`` for a SELECT; two, execute and close, for a
write), on the session's connection and inside its transaction (the session begins it
first, so ``BEGIN IMMEDIATE`` has run).

Public APIs only: the connection comes from ``AsyncConnection.get_raw_connection()`` and
``PoolProxiedConnection.driver_connection``; aiosqlite's ``Connection.execute_fetchall``,
``execute`` and ``executemany``; SQLAlchemy's compiled statement (``positional``,
``positiontup``, ``binds``, ``insert_prefetch``/``update_prefetch``) and, for IN lists,
``SQLCompiler.construct_expanded_state``; types' ``bind_processor``/``result_processor``.
Errors come out as SQLAlchemy's exceptions (``DBAPIError.instance``: ``OperationalError``
for a locked database), as from ``session.execute``. Anything else (PostgreSQL, a
statement needing SQLAlchemy's execution context such as a column default computed in
Python, an empty IN list, DML with RETURNING) takes ``session.execute`` unchanged;
constant column defaults are bound as they are.

Depends on SQLAlchemy 2.1.x and aiosqlite 0.22.x: the minor versions to pin.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiosqlite
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Row = dict[str, Any]
Processor = Callable[[Any], Any] | None

_DRIVER = "choreo.prepared.driver"  # session.info: (transaction, driver, dialect)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    # (param key, literal value, processor, expanding: an IN list)
    binds: tuple[tuple[str, Any, Processor, bool], ...]
    lists: tuple[str, ...]  # the param keys of IN lists
    columns: tuple[str, ...]  # result keys (a SELECT's), empty for DML
    results: tuple[Processor, ...]
    processed: bool  # some result column has a processor
    compiled: SQLCompiler  # expands IN lists (construct_expanded_state)


class Prepared:
    """One Core statement, run as ``session.execute`` would run it, in fewer trips to
    aiosqlite's thread."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan | None] = {}

    async def rows(self, session: AsyncSession, params: Mapping[str, Any]) -> list[Row]:
        """Every row of a SELECT, as dicts keyed by the selected columns' keys."""
        driver, plan = await self._driver_plan(session, params)
        if driver is None or plan is None or _empty_in(plan, params):
            result = await session.execute(self.statement, dict(params))
            return [dict(r) for r in result.mappings()]
        sql, values = _statement(plan, params)
        fetched = await fetch_all(driver, sql, values)
        keys, procs = plan.columns, plan.results
        if plan.processed:
            fetched = [
                [v if p is None or v is None else p(v) for v, p in zip(r, procs, strict=True)]
                for r in fetched
            ]
        return [dict(zip(keys, r, strict=True)) for r in fetched]

    async def first(self, session: AsyncSession, params: Mapping[str, Any]) -> Row | None:
        """The first row of a SELECT, or None."""
        found = await self.rows(session, params)
        return found[0] if found else None

    async def run(self, session: AsyncSession, params: Mapping[str, Any]) -> int:
        """Runs an INSERT, UPDATE or DELETE; returns the rows it matched."""
        driver, plan = await self._driver_plan(session, params)
        if driver is None or plan is None or _empty_in(plan, params):
            result: Any = await session.execute(self.statement, dict(params))
            return int(result.rowcount)
        sql, values = _statement(plan, params)
        return await execute(driver, sql, values)

    # --- the SQLite path --------------------------------------------------------------------

    async def _driver_plan(
        self, session: AsyncSession, params: Mapping[str, Any]
    ) -> tuple[aiosqlite.Connection | None, _Plan | None]:
        driver, dialect = await sqlite_driver(session)
        if driver is None:
            return None, None
        key = (f"{dialect.name}.{dialect.driver}", tuple(sorted(params)))
        plan = self._plans.get(key, _MISSING)
        if plan is _MISSING:
            plan = self._plans[key] = _compile(self.statement, dialect, key[1])
        return driver, plan  # type: ignore[return-value]


def _statement(plan: _Plan, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The SQL and positional values of one execution: the plan's, or for a statement with
    IN lists, SQLAlchemy's expansion of them (one placeholder per item)."""
    values: list[Any] = []
    if plan.lists:
        given = {name: params.get(name, literal) for name, literal, _, _ in plan.binds}
        state = plan.compiled.construct_expanded_state(given)
        # The expansion gives the processors of the items it made; the other binds keep
        # the plan's own.
        procs: dict[str, Processor] = {name: proc for name, _, proc, _ in plan.binds}
        procs.update(state.processors)
        for name in state.positiontup or ():
            value, process = state.parameters[name], procs.get(name)
            values.append(value if process is None or value is None else process(value))
        return state.statement, values
    for name, literal, proc, _ in plan.binds:
        value = params.get(name, literal)
        values.append(value if proc is None or value is None else proc(value))
    return plan.sql, values


async def fetch_all(driver: aiosqlite.Connection, sql: str, values: Sequence[Any]) -> Any:
    """A SELECT's rows, in one trip to aiosqlite's thread; errors as ``session.execute``
    raises them."""
    try:
        return await driver.execute_fetchall(sql, values)
    except sqlite3.Error as exc:
        # The consumer retries an OperationalError (a locked or unavailable database)
        # instead of dead-lettering the event: it must not see sqlite3's own.
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc


async def execute(driver: aiosqlite.Connection, sql: str, values: Sequence[Any]) -> int:
    """One INSERT, UPDATE or DELETE; the rows it matched."""
    try:
        async with driver.execute(sql, values) as cursor:
            return int(cursor.rowcount)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc


async def execute_many(driver: aiosqlite.Connection, sql: str, rows: list[Any]) -> None:
    """``executemany`` on the driver connection; errors as ``session.execute`` raises them."""
    try:
        async with driver.executemany(sql, rows):
            pass
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, rows, exc, sqlite3.Error) from exc


async def sqlite_driver(session: AsyncSession) -> tuple[aiosqlite.Connection | None, Dialect]:
    """The session's aiosqlite connection (inside its transaction) and dialect; None on
    other drivers."""
    sync = session.sync_session
    tx = sync.get_transaction()
    cached = session.info.get(_DRIVER)
    if tx is not None and cached is not None and cached[0] is tx and tx.is_active:
        return cached[1], cached[2]
    conn = await session.connection()  # begins the transaction if none is open yet
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, aiosqlite.Connection):
        driver = None
    session.info[_DRIVER] = (sync.get_transaction(), driver, conn.dialect)
    return driver, conn.dialect


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    compiled: Any = cast(ClauseElement, statement).compile(dialect=dialect, column_keys=list(keys))
    if not compiled.positional:
        return None
    # Python-side column defaults of the columns not given: a constant is bound as it is;
    # anything else (a function, a SQL expression) needs SQLAlchemy's execution context.
    defaults: dict[str, Any] = {}
    for column, attr in [(c, "default") for c in compiled.insert_prefetch] + [
        (c, "onupdate") for c in compiled.update_prefetch
    ]:
        default = getattr(column, attr)
        if default is None or not default.is_scalar:
            return None
        defaults[column.key] = default.arg
    binds = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None:
            return None
        literal = defaults.get(name, bind.value)
        if name not in keys and name not in defaults and bind.required:
            return None  # session.execute would raise for the missing value: let it
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((name, literal, proc, bool(bind.expanding)))
    columns: tuple[str, ...] = ()
    results: tuple[Processor, ...] = ()
    if isinstance(statement, Select):
        selected = statement.selected_columns
        columns = tuple(selected.keys())
        results = tuple(_result_processor(c.type, dialect) for c in selected)
    elif getattr(compiled, "returning", None):
        return None  # rows of a DML RETURNING: SQLAlchemy's path keeps it simple
    lists = tuple(name for name, _, _, expanding in binds if expanding)
    processed = any(p is not None for p in results)
    return _Plan(str(compiled), tuple(binds), lists, columns, results, processed, compiled)


def _empty_in(plan: _Plan, params: Mapping[str, Any]) -> bool:
    """An empty IN list: SQLAlchemy renders it as an always-false expression."""
    return any(not params.get(name) for name in plan.lists)


def _result_processor(type_: Any, dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).result_processor(dialect, None)  # type: ignore[no-any-return]
