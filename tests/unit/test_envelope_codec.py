"""Envelope headers, single-object framing and schema resolution: pure logic."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from events.catalogue import Catalogue, SchemaVersion, schema_fingerprint
from events.codec import AvroCodec, MalformedEventError, UnknownSchemaError
from events.envelope import Envelope, EnvelopeError, new_event_id, utcnow
from events.routing import RetryPolicy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "schemas"


def test_envelope_round_trips_through_headers():
    env = Envelope(
        new_event_id(),
        "Ping",
        1,
        utcnow(),
        "svc",
        new_event_id(),
        "k-1",
        causation_id=new_event_id(),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert Envelope.from_headers(env.to_headers(), b"k-1") == env


@pytest.mark.parametrize("drop", ["event-id", "event-type", "schema-version", "occurred-at"])
def test_envelope_missing_required_header_is_an_error(drop):
    env = Envelope(new_event_id(), "Ping", 1, utcnow(), "svc", new_event_id(), "k")
    # Without event-id the record is read as CloudEvents': its ce_id goes too.
    gone = {drop, "ce_id"} if drop == "event-id" else {drop}
    headers = [(k, v) for k, v in env.to_headers() if k not in gone]
    with pytest.raises(EnvelopeError, match=drop):
        Envelope.from_headers(headers, b"k")


def test_envelope_rejects_a_non_uuid_event_id():
    env = Envelope("not-a-uuid", "Ping", 1, utcnow(), "svc", "c", "k")
    with pytest.raises(EnvelopeError):
        Envelope.from_headers(env.to_headers(), b"k")


def test_single_object_encoding_layout():
    codec = AvroCodec(Catalogue.load(FIXTURES))
    data = codec.encode("Ping", {"aggregate_id": "a", "seq": 1, "note": ""})
    schema = codec.catalogue.latest("Ping")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint == schema_fingerprint(schema.raw)
    assert codec.decode(data).payload == {"aggregate_id": "a", "seq": 1, "note": ""}


def test_old_versions_are_read_as_the_latest_through_resolution(tmp_path):
    v1 = json.loads((FIXTURES / "testing" / "Ping" / "v1.avsc").read_text())
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "colour", "type": ["null", "string"], "default": None})
    folder = tmp_path / "testing" / "Ping"
    folder.mkdir(parents=True)
    (folder / "v1.avsc").write_text(json.dumps(v1))
    (folder / "v2.avsc").write_text(json.dumps(v2))
    codec = AvroCodec(Catalogue.load(tmp_path))
    old = codec.encode("Ping", {"aggregate_id": "a", "seq": 1, "note": "n"}, version=1)
    decoded = codec.decode(old)
    assert decoded.writer_version == 1
    assert decoded.payload == {"aggregate_id": "a", "seq": 1, "note": "n", "colour": None}


@pytest.mark.parametrize(
    ("mangle", "error", "text"),
    [
        (lambda d: d[:5], MalformedEventError, "shorter"),
        (lambda d: b"\x01\x01" + d[2:], MalformedEventError, "bad magic"),
        (lambda d: d[:2] + b"\xff" * 8 + d[10:], UnknownSchemaError, "fingerprint"),
        (lambda d: d[:-2], MalformedEventError, "corrupt"),
        (lambda d: d + b"\x00", MalformedEventError, "trailing"),
    ],
)
def test_bad_bytes_raise_typed_errors(mangle, error, text):
    codec = AvroCodec(Catalogue.load(FIXTURES))
    good = codec.encode("Ping", {"aggregate_id": "abc", "seq": 7, "note": "hello"})
    with pytest.raises(error, match=text):
        codec.decode(mangle(good))


def test_retry_delays_grow_and_are_bounded():
    policy = RetryPolicy(attempts=6, initial_s=0.1, max_s=1.0)
    for attempt in range(1, 10):
        ceiling = min(1.0, 0.1 * 2 ** (attempt - 1))
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling


def test_catalogue_knows_every_version_by_fingerprint():
    cat = Catalogue.load(FIXTURES)
    for event_type in cat.event_types:
        sv: SchemaVersion = cat.latest(event_type)
        assert cat.by_fingerprint(sv.fingerprint) is sv
