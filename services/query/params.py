"""Query parameters the API parses itself: page cursors and read-your-writes positions.
Pure: a bad value raises ``ValueError`` with a message fit for a 422 answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from datetime import datetime

from services.query.domain import iso

# A Kafka topic name (its legal characters), a partition and an offset, in ASCII digits.
_POSITION = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]{1,249}):(?P<partition>[0-9]{1,9}):(?P<offset>[0-9]{1,18})$"
)
MAX_POSITIONS = 100
_MAX_POSITION = 249 + 1 + 9 + 1 + 18 + 2  # the longest position, its comma and a space


# Marks a cursor of a newest-first listing: it pages the other way, so it only goes with
# newest_first=true (and a plain cursor only without it).
_NEWEST_FIRST = "newest_first"


def encode_cursor(created_at: str, order_id: str, newest_first: bool = False) -> str:
    """An opaque cursor for the page after the row (created_at, order_id), in the listing's
    direction."""
    value = [created_at, order_id, _NEWEST_FIRST] if newest_first else [created_at, order_id]
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, newest_first: bool = False) -> tuple[str, str]:
    """The (created_at, order_id) a cursor of a listing in that direction stands for."""
    if not cursor or len(cursor) > 512:
        raise ValueError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(isinstance(v, str) and v and "\x00" not in v for v in value)
        or (len(value) == 3 and value[2] != _NEWEST_FIRST)
    ):
        raise ValueError("cursor is not one this API returned")
    if (len(value) == 3) != newest_first:
        wanted = "with" if len(value) == 3 else "without"
        raise ValueError(f"cursor is for a listing {wanted} newest_first=true")
    created_at, order_id = value[:2]
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        raise ValueError("cursor is not one this API returned") from None
    if moment.tzinfo is None or iso(moment) != created_at:
        raise ValueError("cursor is not one this API returned")
    return created_at, order_id


def parse_positions(values: Iterable[str]) -> dict[tuple[str, int], int]:
    """``topic:partition:offset`` items (repeated and/or comma-separated) -> the highest
    offset wanted per partition."""
    wanted: dict[tuple[str, int], int] = {}
    values = list(values)
    # Counted and measured before splitting: the work stays bounded whatever arrives.
    if len(values) > MAX_POSITIONS or sum(map(len, values)) > MAX_POSITIONS * _MAX_POSITION:
        raise ValueError(f"at most {MAX_POSITIONS} positions")
    items = [item.strip() for value in values for item in value.split(",")]
    if len(items) > MAX_POSITIONS:
        raise ValueError(f"at most {MAX_POSITIONS} positions")
    for item in items:
        match = _POSITION.fullmatch(item)
        if match is None:
            shown = item if len(item) <= 80 else item[:80] + "..."
            raise ValueError(f"{shown!r} is not topic:partition:offset")
        topic, partition = match["topic"], int(match["partition"])
        offset = int(match["offset"])
        key = (topic, partition)
        wanted[key] = max(wanted.get(key, -1), offset)
    return wanted
