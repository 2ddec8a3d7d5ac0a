"""The faust codec over the platform's Avro codec: same bytes, and no exception on bad ones."""

from __future__ import annotations

from datetime import UTC, datetime

from events.catalogue import Catalogue
from events.codec import AvroCodec, Decoded
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
