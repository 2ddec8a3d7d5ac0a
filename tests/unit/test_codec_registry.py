"""The schema registry wire format in the codec: framing, dispatch on the first byte, the
writer schemas kept by id, foreign writer schemas, and what pickles. No registry runs here:
ids a process writes are given, and an id it never saw meets no registry (url None)."""

from __future__ import annotations

import copy
import io
import json
import pickle
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from fastavro import schemaless_writer

from events.catalogue import Catalogue, SchemaVersion
from events.codec import (
    AvroCodec,
    CodecError,
    MalformedEventError,
    RegistryFraming,
    UnknownSchemaError,
    UnregisteredSchema,
    writer_schema,
)
from events.envelope import Envelope, new_event_id, utcnow
from events.pausing import DependencyUnavailable
from events.reading import decode_records
from events.schema_registry import RegistryUnavailable, subject_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "schemas"
PING = {"aggregate_id": "a-1", "seq": 7, "note": "hi"}


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue.load(FIXTURES).retarget({"Ping": "t.ping", "Pong": "t.pong"})


def _registry_codec(catalogue: Catalogue, schema_id: int = 42) -> AvroCodec:
    ping = catalogue.latest("Ping")
    framing = RegistryFraming(None, {ping.fingerprint: schema_id})
    return AvroCodec(catalogue, framing)


def test_registry_format_is_magic_zero_the_id_big_endian_and_the_avro_body(catalogue):
    single = AvroCodec(catalogue).encode("Ping", PING)
    framed = _registry_codec(catalogue, 0x01020304).encode("Ping", PING)

    assert framed[:5] == b"\x00\x01\x02\x03\x04"
    assert framed[5:] == single[10:]  # the same schemaless body behind either header


def test_every_codec_reads_both_framings(catalogue):
    registry = _registry_codec(catalogue)
    single = AvroCodec(catalogue, registry=registry.registry)  # writes single-object
    framed = registry.encode("Ping", PING)
    plain = single.encode("Ping", PING)

    for codec in (registry, single):
        for data in (framed, plain):
            decoded = codec.decode(data)
            assert (decoded.event_type, decoded.payload) == ("Ping", PING)


def test_an_id_this_process_writes_is_known_without_asking_and_kept(catalogue):
    codec = _registry_codec(catalogue, 9)
    codec.decode(codec.encode("Ping", PING))
    assert codec.registry.cached_ids == {9}


def test_an_unknown_id_with_no_registry_to_ask_is_not_the_events_fault(catalogue):
    codec = _registry_codec(catalogue, 9)
    data = b"\x00\x00\x00\x00\x0a" + codec.encode("Ping", PING)[5:]

    with pytest.raises(RegistryUnavailable, match="schema id 10") as raised:
        codec.decode(data)
    assert not isinstance(raised.value, CodecError)  # never dead-lettered for it
    assert isinstance(raised.value, DependencyUnavailable)  # its partition waits instead
    assert raised.value.retry_after_s > 0


def test_writing_a_version_without_an_id_names_the_release_command(catalogue):
    codec = _registry_codec(catalogue)
    with pytest.raises(UnregisteredSchema, match="choreo schemas release"):
        codec.encode("Pong", {"aggregate_id": "a", "seq": 1})


def test_a_short_registry_header_is_malformed(catalogue):
    with pytest.raises(MalformedEventError, match="5-byte schema registry header"):
        _registry_codec(catalogue).decode(b"\x00\x00\x01")


def test_the_codec_pickles_with_its_ids_and_no_client(catalogue):
    codec = _registry_codec(catalogue, 77)
    codec.decode(codec.encode("Ping", PING))
    back = pickle.loads(pickle.dumps(codec))

    assert back.registry.ids == codec.registry.ids
    assert back.registry.url is None and back.registry._client is None
    assert back.decode(codec.encode("Ping", PING)).payload == PING


def _ping_raw(catalogue: Catalogue) -> dict:
    return copy.deepcopy(catalogue.latest("Ping").raw)


def test_a_foreign_text_of_a_catalogued_version_is_that_version(catalogue):
    raw = _ping_raw(catalogue)
    raw["doc"] = "written by another team's producer"  # not in the canonical form
    text = json.dumps(raw, indent=4)

    writer = writer_schema(5, text, catalogue)

    assert writer is catalogue.latest("Ping")


def test_a_foreign_compatible_writer_is_read_and_resolved_to_the_latest(catalogue):
    raw = _ping_raw(catalogue)
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "note"]
    raw["fields"].append({"name": "extra", "type": "int"})  # unknown to us: skipped
    raw["fields"].append({"name": "note", "type": "string"})  # another order
    writer = writer_schema(6, json.dumps(raw), catalogue)
    assert isinstance(writer, SchemaVersion) and writer.event_type == "Ping"
    assert writer.version == catalogue.latest("Ping").version

    buf = io.BytesIO()
    schemaless_writer(buf, writer.parsed, {"aggregate_id": "a", "seq": 2, "extra": 5, "note": "n"})
    framing = RegistryFraming(None)
    framing._writers[6] = writer  # as a fetch of id 6 would have left it
    codec = AvroCodec(catalogue, registry=framing)

    decoded = codec.decode(b"\x00\x00\x00\x00\x06" + buf.getvalue())

    assert decoded.payload == {"aggregate_id": "a", "seq": 2, "note": "n"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ('"string"', "not an Avro record"),
        (json.dumps({"type": "record", "name": "Nope", "fields": []}), "no event type"),
        (
            json.dumps({"type": "record", "name": "Ping", "namespace": "elsewhere", "fields": []}),
            "not choreo.testing.Ping",
        ),
    ],
)
def test_a_registry_schema_no_catalogued_type_reads_is_unknown(catalogue, text, reason):
    with pytest.raises(UnknownSchemaError, match=reason):
        writer_schema(3, text, catalogue)


def test_subjects_follow_topic_record_name_strategy():
    assert subject_for("orders.events", "choreo.orders.OrderPlaced") == (
        "orders.events-choreo.orders.OrderPlaced"
    )


def test_a_projection_reader_skips_no_valid_event_for_a_registry_it_cannot_ask(catalogue):
    """Skipping would lose the event for the read model: decode_records raises instead,
    and the projection's runner waits and reads again from its saved offsets."""
    writer = _registry_codec(catalogue, 9)
    reader = AvroCodec(catalogue)  # has never seen id 9, and no registry to ask
    env = Envelope(new_event_id(), "Ping", 1, utcnow(), "test", new_event_id(), "k")
    record = ConsumerRecord(
        "t.ping", 0, 5, 0, 0, b"k", writer.encode("Ping", PING), None, 0, 0,
        env.to_headers(),
    )  # fmt: skip

    with pytest.raises(RegistryUnavailable):
        decode_records("projection", {"Ping": None}, reader, [record])
    assert decode_records("projection", {"Ping": None}, writer, [record]).events[0].payload == PING
