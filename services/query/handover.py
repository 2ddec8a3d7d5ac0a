"""Order rows handed from a replay reader to the replay's writer in a SQLite file.

A reader that keeps its orders makes their rows once it has read its share: tens of
thousands of rows of thirty columns, which the one writer then inserted through executemany
after the readers had finished, binding every value in Python: the longest serial part of a
replay. When the replay writes a SQLite file on a connection of its own, a reader writes
its rows into a file of its own instead (in parallel with the other readers, and in place of
pickling them), and the writer attaches it and copies the rows with one INSERT ... SELECT,
in SQLite's C code, in about a third of the time (``sql.insert_file``).

Standard library only: the reader processes import this.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

TABLE = "rows"


@dataclass(frozen=True)
class RowsFile:
    """Rows in a table's column order, in the order written (``TABLE`` of ``path``)."""

    path: str
    count: int


def write_rows(directory: str, name: str, rows: list[tuple[Any, ...]]) -> RowsFile:
    """Writes ``rows`` (all of one width) into a new file ``name``.db of ``directory``."""
    path = os.path.join(directory, f"{name}.db")
    width = len(rows[0]) if rows else 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A scratch file read once: no journal, no syncing.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        # Columns without a type store each value as given (text, integer, NULL); the
        # target table's own types apply when the writer copies them.
        conn.execute(f"CREATE TABLE {TABLE} ({', '.join(f'c{i}' for i in range(width))})")
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * width)})", rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return RowsFile(path, len(rows))


def read_rows(rows: RowsFile) -> list[tuple[Any, ...]]:
    """The rows as written (for a writer that cannot attach the file)."""
    conn = sqlite3.connect(rows.path)
    try:
        return list(conn.execute(f"SELECT * FROM {TABLE} ORDER BY rowid"))
    finally:
        conn.close()
