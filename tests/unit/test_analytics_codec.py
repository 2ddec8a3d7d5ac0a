"""The faust codec over the platform's Avro codec: same bytes, and no exception on bad ones."""

from __future__ import annotations

from datetime import UTC, datetime

from events.catalogue import Catalogue
from events.codec import AvroCodec, Decoded, RegistryFraming
from events.schema_registry import RegistryUnavailable
from services.analytics.codec import PlatformAvroCodec, Undecodable

CODEC = AvroCodec(Catalogue.load())
ORDER = "3f1c2a7e-5b8d-4c3e-9a1f-0d2e4b6c8a10"
COMPLETED = {
    "order_id": ORDER,
    "customer_id": "cust-1",
    "total_cents": 500,
    "shipment_id": "shp-1",
    "completed_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
}


def test_decodes_what_the_platform_encodes_and_back():
    data = CODEC.encode("OrderCompleted", COMPLETED)
    decoded = PlatformAvroCodec(CODEC).loads(data)
    assert decoded == CODEC.decode(data)
    assert isinstance(decoded, Decoded) and str(decoded.payload["order_id"]) == ORDER
    assert PlatformAvroCodec(CODEC).dumps(decoded) == data


def test_bad_bytes_become_a_value_saying_why():
    codec = PlatformAvroCodec(CODEC)
    short = codec.loads(b"nope")
    assert isinstance(short, Undecodable) and short.error_type == "MalformedEventError"
    unknown = codec.loads(b"\xc3\x01" + b"\x00" * 8 + b"body")
    assert isinstance(unknown, Undecodable) and unknown.error_type == "UnknownSchemaError"
    truncated = codec.loads(CODEC.encode("OrderCompleted", COMPLETED)[:-3])
    assert isinstance(truncated, Undecodable) and "OrderCompleted" in truncated.error


def test_reads_both_framings_as_one_stream():
    """A topic migrating to the registry format: analytics' codec over a single-object
    platform codec (what make_codec builds) reads registry-framed values too. Its registry
    framing knows the id here (as after a first fetch), so no registry is needed."""
    fp = CODEC.catalogue.latest("OrderCompleted").fingerprint
    writer = AvroCodec(CODEC.catalogue, RegistryFraming(None, {fp: 42}))
    framed = writer.encode("OrderCompleted", COMPLETED)
    assert framed[:5] == b"\x00" + (42).to_bytes(4, "big")
    reader = PlatformAvroCodec(AvroCodec(CODEC.catalogue, registry=RegistryFraming(None, {fp: 42})))
    single = reader.loads(CODEC.encode("OrderCompleted", COMPLETED))
    registry = reader.loads(framed)
    assert isinstance(single, Decoded) and isinstance(registry, Decoded)
    assert registry.payload == single.payload and registry.event_type == "OrderCompleted"


class _RegistryDownOnce(AvroCodec):
    """The platform codec as it behaves while the registry is down for an id it has not
    seen: ``RegistryUnavailable`` until ``back`` is set."""

    back = False

    def decode(self, data: bytes) -> Decoded:
        if not self.back:
            raise RegistryUnavailable("connection refused", retry_after_s=0.25)
        return super().decode(data)


def test_a_registry_outage_waits_instead_of_losing_the_event():
    """Faust acknowledges a value that fails to decode: the codec must not give up on a
    valid event because the registry is down, nor count it as undecodable."""
    codec = _RegistryDownOnce(CODEC.catalogue)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            codec.back = True

    decoded = PlatformAvroCodec(codec, wait=wait).loads(CODEC.encode("OrderCompleted", COMPLETED))
    assert waits == [0.25, 0.25]
    assert isinstance(decoded, Decoded) and decoded.event_type == "OrderCompleted"
