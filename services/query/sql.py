"""Bulk writes through the DB-API's executemany, with SQL compiled once per table.

SQLAlchemy's executemany maps every row's dict to positional parameters in Python, which
cost more per timeline row than SQLite spends storing it. Here each statement is compiled
once per table and backend (SQLite or PostgreSQL, each with its own upsert spelling and
parameter style), and rows are tuples in the table's column order, handed to the driver as
they are. Values must already be what the column stores (text, integers): no type
processing happens on this path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from services.query.handover import RowsFile, read_rows

CHUNK = 500  # keys per IN (...): well under every backend's bound-parameter limit

_compiled: dict[tuple[str, str, Any], str] = {}


def _compile(dialect: Dialect, table: Table, kind: str) -> str:
    key = (dialect.name, table.name, kind)
    sql = _compiled.get(key)
    if sql is None:
        insert = pg_insert if dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table)
        if kind == "upsert":
            keys = [c.name for c in table.primary_key.columns]
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
            )
        elif kind == "ignore":
            stmt = stmt.on_conflict_do_nothing()
        compiled = stmt.compile(dialect=dialect)
        order = [c.name for c in table.columns]
        if list(compiled.positiontup or ()) != order:
            raise RuntimeError(f"{table.name}: parameters are not in column order")
        sql = _compiled[key] = str(compiled)
    return sql


def _execute(session: Session, table: Table, kind: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    connection = session.connection()
    connection.exec_driver_sql(_compile(connection.dialect, table, kind), list(rows))


def update_columns(
    session: Session, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Sets only ``columns`` of existing rows; each row is (values of columns..., key).

    Indexes whose columns are not set are left alone (an upsert of the whole row would
    rewrite every index entry of every row it touches).
    """
    if not rows:
        return
    connection = session.connection()
    cache_key = (connection.dialect.name, table.name, columns)
    sql = _compiled.get(cache_key)
    if sql is None:
        (key,) = table.primary_key.columns
        stmt = (
            update(table).where(key == bindparam("_key")).values({c: bindparam(c) for c in columns})
        )
        compiled = stmt.compile(dialect=connection.dialect)
        if list(compiled.positiontup or ()) != [*columns, "_key"]:
            raise RuntimeError(f"{table.name}: parameters are not in the expected order")
        sql = _compiled[cache_key] = str(compiled)
    connection.exec_driver_sql(sql, list(rows))


def upsert(session: Session, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts rows (tuples in column order), replacing those whose primary key exists."""
    _execute(session, table, "upsert", rows)


def insert(session: Session, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts rows; a known primary key fails the statement (IntegrityError)."""
    _execute(session, table, "insert", rows)


def insert_file(session: Session, table: Table, rows: RowsFile, *, new_only: bool = False) -> None:
    """``insert`` (or with ``new_only``, ``insert_new``) of rows a replay reader handed over
    in a file: on SQLite the file is attached (until the connection is handed back:
    ``events.sqlite_wal.checkpoints_aside``) and copied in one statement; elsewhere its rows
    are read and inserted."""
    if not rows.count:
        return
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        (insert_new if new_only else insert)(session, table, read_rows(rows))
        return
    # ATTACH works inside a transaction (DETACH does not); each file is attached once, under
    # a name made from its path (SQLite lists files by their resolved path, not as given).
    alias = f"handover_{hashlib.blake2b(rows.path.encode(), digest_size=8).hexdigest()}"
    attached = {r[1] for r in connection.exec_driver_sql("PRAGMA database_list")}
    if alias not in attached:
        connection.exec_driver_sql(f"ATTACH DATABASE ? AS {alias}", (rows.path,))
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    connection.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({columns}) SELECT * FROM {alias}.{rows.table} '
        f"WHERE rowid BETWEEN ? AND ?{' ON CONFLICT DO NOTHING' if new_only else ''}",
        (rows.first, rows.last),
    )


def insert_new(session: Session, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts rows whose primary key is new; a row with a known key is left as it was."""
    _execute(session, table, "ignore", rows)


def load(session: Session, table: Table, keys: Iterable[str]) -> list[Any]:
    """The rows whose (single-column) primary key is among ``keys``."""
    (key,) = table.primary_key.columns
    wanted = list(keys)
    rows: list[Any] = []
    for i in range(0, len(wanted), CHUNK):
        rows.extend(session.execute(select(table).where(key.in_(wanted[i : i + CHUNK]))))
    return rows


def existing(session: Session, table: Table, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` are primary keys of rows already stored."""
    (key,) = table.primary_key.columns
    wanted = list(keys)
    found: set[str] = set()
    for i in range(0, len(wanted), CHUNK):
        query = select(key).where(key.in_(wanted[i : i + CHUNK]))
        found.update(r[0] for r in session.execute(query))
    return found
