"""Multi-row inserts on the hot paths (inbox, outbox, staged handler rows) without SQLAlchemy's
per-row statement work.

``session.execute(insert(table), rows)`` builds and type-processes every row's parameters
through the compiled statement, and a consumer batch writes two or three rows an event.
Here the statement is compiled once per (table, columns, dialect), the column types' bind
processors are looked up once, and rows go to the driver's ``executemany`` as plain tuples.
Rows whose insert would need anything more (Python-side column defaults, a renamed bind)
take SQLAlchemy's ordinary path. Rows with different key sets are written one group per key
set (SQLAlchemy's executemany needs one key set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from events.prepared import execute_many, sqlite_driver

Row = dict[str, Any]
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]  # the row keys, in the statement's parameter order
    processors: tuple[Processor, ...]
    positional: bool


_plans: dict[tuple[Table, tuple[str, ...], str], _Plan | None] = {}


def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Plan | None:
    cache_key = (table, keys, f"{dialect.name}.{dialect.driver}.{dialect.paramstyle}")
    if cache_key in _plans:
        return _plans[cache_key]
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.params)
    plan: _Plan | None = None
    # Only when the statement binds exactly the given keys: anything else (a column default
    # evaluated in Python, a renamed bind) needs SQLAlchemy's execution context.
    if sorted(names) == sorted(keys):
        processors = tuple(
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        )
        plan = _Plan(str(compiled), names, processors, compiled.positional)
    _plans[cache_key] = plan
    return plan


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> None:
    """INSERT every row in the session's transaction, one ``executemany`` per key set."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    if not groups:
        return
    driver, dialect = await sqlite_driver(session)
    for keys, group in groups.items():
        plan = _plan(table, keys, dialect)
        if plan is None:
            await session.execute(insert(table), group)
            continue
        params = [_params(plan, row) for row in group]
        if driver is not None:  # SQLite: straight to aiosqlite's connection
            await execute_many(driver, plan.sql, params)
        else:
            await (await session.connection()).exec_driver_sql(plan.sql, params)


def _params(plan: _Plan, row: Row) -> Any:
    values = [
        row[key] if proc is None else proc(row[key])
        for key, proc in zip(plan.keys, plan.processors, strict=True)
    ]
    return tuple(values) if plan.positional else dict(zip(plan.keys, values, strict=True))
