"""events.parking's pure parts: how keys and records are stored and restored."""

from __future__ import annotations

import uuid

from aiokafka.structs import ConsumerRecord

from events.parking import _headers_json, key_text, parked_record, record_event_id


def record(headers: list[tuple[str, bytes]], key: bytes | None = b"k", offset: int = 7):
    return ConsumerRecord("t", 1, offset, 0, 0, key, b"\x00v", None, 1, 2, headers)


def test_short_text_keys_are_kept_and_others_become_distinct_digests():
    assert key_text(b"order-1") == "order-1"
    odd = [b"\xff\xfe", b"a\x00b", b"x" * 201, b"sha256:pretend"]
    texts = [key_text(k) for k in odd]
    assert all(t.startswith("sha256:") and len(t) == 71 for t in texts)
    assert len(set(texts)) == len(odd)


def test_a_record_without_an_event_id_gets_one_made_of_its_position():
    eid = str(uuid.uuid4())
    assert record_event_id(record([("event-id", eid.encode())])) == eid
    made = record_event_id(record([]))
    assert made == record_event_id(record([])) and len(made) == 36
    assert made != record_event_id(record([], offset=8))


def test_a_parked_row_restores_the_record_byte_for_byte():
    original = record([("event-id", b"e"), ("bin", b"\xff\x00"), ("none", None)])  # type: ignore[list-item]
    row = {
        "topic": original.topic,
        "partition": original.partition,
        "offset": original.offset,
        "key_bytes": original.key,
        "value": original.value,
        "headers": _headers_json(original),
    }
    back = parked_record(row)
    assert (back.topic, back.partition, back.offset) == ("t", 1, 7)
    assert back.key == b"k" and back.value == b"\x00v"
    assert list(back.headers) == list(original.headers)
