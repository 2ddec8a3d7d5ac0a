"""Rows handed from a replay reader to the replay's writer in a SQLite file.

A replay has one writer. Unpickling every timeline and order row the readers send and
binding each value through executemany would be most of its work, and the order rows come
all at the end, after the readers have finished. So when the replay writes a SQLite file on
a connection of its own, a reader that keeps its orders writes its rows into a file of its
own instead (in parallel with the other readers, and in place of pickling them), and the
writer attaches that file and copies each batch's rows with one INSERT ... SELECT, in
SQLite's C code (``sql.insert_file``): a third of executemany's time.

The file is in WAL mode: the writer reads the batches the reader has committed while the
reader appends the next ones, neither waiting for the other. Standard library only: the
reader processes import this.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RowsFile:
    """``count`` rows of ``table`` in ``path`` from rowid ``first`` on, in a target table's
    column order and in the order written."""

    path: str
    table: str
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


class Handover:
    """A reader's file: each table appended batch by batch, each batch committed before the
    reader tells the writer about it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.conn: sqlite3.Connection | None = None
        self.written: dict[str, int] = {}  # table -> rows so far (rowids 1..n)

    def append(self, table: str, rows: list[tuple[Any, ...]]) -> RowsFile:
        first = self.written.get(table, 0) + 1
        if not rows:
            return RowsFile(self.path, table, first, 0)
        conn = self._connection()
        width = len(rows[0])
        if table not in self.written:
            # Columns without a type store each value as given (text, integer, NULL); the
            # target table's own types apply when the writer copies them.
            conn.execute(f"CREATE TABLE {table} ({', '.join(f'c{i}' for i in range(width))})")
            self.written[table] = 0
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * width)})", rows)
        conn.execute("COMMIT")
        self.written[table] += len(rows)
        return RowsFile(self.path, table, first, len(rows))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # A scratch file read once, deleted after the replay: never synced.
            self.conn.execute("PRAGMA synchronous=OFF")
        return self.conn


def read_rows(rows: RowsFile) -> list[tuple[Any, ...]]:
    """The rows as written (for a writer that cannot attach the file)."""
    if not rows.count:
        return []
    conn = sqlite3.connect(rows.path)
    try:
        query = f"SELECT * FROM {rows.table} WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
        return list(conn.execute(query, (rows.first, rows.last)))
    finally:
        conn.close()
