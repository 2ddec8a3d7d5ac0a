"""Page cursors and read-your-writes positions, as the query API parses them."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.query.params import MAX_POSITIONS, decode_cursor, encode_cursor, parse_positions

AT = "2025-03-01T12:00:00.123456+00:00"


@given(
    st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(
        lambda d: d.isoformat(timespec="microseconds")
    ),
    # Order ids never hold NUL (a cursor with one is refused: PostgreSQL cannot take it).
    st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
        min_size=1,
        max_size=60,
    ),
)
def test_a_cursor_round_trips(created_at, order_id):
    cursor = encode_cursor(created_at, order_id)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (created_at, order_id)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "a",
        _b64(b"not json"),
        _b64(b"{}"),
        _b64(b"[]"),
        _b64(b'["x"]'),
        _b64(b'["x", "y", "z"]'),
        _b64(b'[1, "o"]'),
        _b64(b'["", "o"]'),
        _b64(b'["yesterday", "o"]'),
        _b64(b'["2025-03-01T12:00:00", "o"]'),  # no offset
        _b64(b'["2025-03-01T12:00:00+01:00", "o"]'),  # not the form this API writes
        _b64(f'["{AT}", ""]'.encode()),
        _b64(b"\xff\xfe"),
        "x" * 600,
    ],
)
def test_a_cursor_this_api_did_not_write_is_refused(cursor):
    with pytest.raises(ValueError):
        decode_cursor(cursor)


def test_positions_repeated_or_comma_separated_keep_the_highest_per_partition():
    wanted = parse_positions(["p.orders.events:0:5, p.orders.events:0:3", "t-x_y:2:0"])
    assert wanted == {("p.orders.events", 0): 5, ("t-x_y", 2): 0}
    assert parse_positions([]) == {}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "topic",
        "topic:1",
        "topic:1:",
        ":1:2",
        "topic:-1:2",
        "topic:1:-2",
        "topic:a:2",
        "topic:1:2.5",
        "to pic:1:2",
        "topic:1:2:3",
        "topic:²:1",
        "topic:1:2,",
        "topic:1234567890:1",
        "topic:1:1234567890123456789",
        "t" * 250 + ":1:1",
    ],
)
def test_malformed_positions_are_refused(value):
    with pytest.raises(ValueError):
        parse_positions([value])


def test_too_many_positions_are_refused():
    with pytest.raises(ValueError, match="at most"):
        parse_positions([",".join(f"t:{i}:1" for i in range(MAX_POSITIONS + 1))])


def test_a_newest_first_cursor_goes_only_with_newest_first():
    cursor = encode_cursor(AT, "o-1", newest_first=True)
    assert decode_cursor(cursor, newest_first=True) == (AT, "o-1")
    with pytest.raises(ValueError, match="with newest_first"):
        decode_cursor(cursor)
    with pytest.raises(ValueError, match="without newest_first"):
        decode_cursor(encode_cursor(AT, "o-1"), newest_first=True)
    with pytest.raises(ValueError, match="not one this API returned"):
        decode_cursor(_b64(f'["{AT}", "o", "oldest_first"]'.encode()), newest_first=True)
