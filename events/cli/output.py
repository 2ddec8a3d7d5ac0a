"""How every ``choreo`` listing prints: lines for a person (``--output text``, the default) or,
with ``--output json``, one compact JSON object per line (JSON Lines), so that a listing
streams and each line parses alone (``choreo dlq list --output json | jq``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Row = Mapping[str, Any]


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="text for a person (default) or json: one JSON object per line",
    )


def as_json(row: Row) -> str:
    # default=str: datetimes, paths and UUIDs print as their text rather than failing.
    return json.dumps(row, default=str)


def as_indented_json(row: Row) -> str:
    """A record with nested parts (headers, payload) as a person reads it: indented JSON."""
    return json.dumps(row, indent=2, default=str)


def print_rows(output: str, rows: Iterable[Row], line: Callable[[Any], str]) -> int:
    """Each row as ``line(row)`` or as one JSON object; returns how many were printed."""
    count = 0
    for row in rows:
        print(as_json(row) if output == "json" else line(row))
        count += 1
    return count


def print_document(output: str, doc: Row, lines: Callable[[Any], Iterable[str]]) -> None:
    """One object: as one JSON line, or as the text lines ``lines(doc)`` gives."""
    if output == "json":
        print(as_json(doc))
        return
    for text in lines(doc):
        print(text)
