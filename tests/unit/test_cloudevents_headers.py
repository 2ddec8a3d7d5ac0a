"""The envelope as CloudEvents Kafka binary-mode headers, both ways: pure logic."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary

from events import parking
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.dlq import DLQ_REASON, DLQ_TOPIC
from events.dlq_admin import DeadLetter, RedriveRefused, redrive_target
from events.envelope import Envelope, EnvelopeError, new_event_id
from events.reading import decode_records

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "schemas"

CHOREO_ONLY = {
    "event-id",
    "event-type",
    "schema-version",
    "occurred-at",
    "producer",
    "correlation-id",
    "causation-id",
}


def _envelope(**changes: object) -> Envelope:
    env = Envelope(
        new_event_id(),
        "OrderCreated",
        3,
        datetime(2026, 12, 6, 15, 4, 5, 123456, tzinfo=UTC),
        "orders",
        new_event_id(),
        "order-1",
        causation_id=new_event_id(),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    return env._replace(**changes)


def _cloudevents_only(env: Envelope) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in env.to_headers() if k not in CHOREO_ONLY]


def _record(headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord("t", 0, 7, 0, 0, b"k", b"v", None, 1, 1, headers)


def test_every_envelope_carries_the_cloudevents_binary_mode_headers():
    env = _envelope()
    h = dict(env.to_headers())
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_id"] == env.event_id.encode()
    assert h["ce_source"] == b"/choreo/orders"
    assert h["ce_type"] == b"OrderCreated"
    assert datetime.fromisoformat(h["ce_time"].decode()) == env.occurred_at
    assert h["ce_time"] == b"2026-12-06T15:04:05.123456+00:00"
    assert h["ce_subject"] == b"order-1"
    assert h["content-type"] == b"application/avro"
    # choreo's own headers stay, for readers of older releases
    assert h["event-id"] == env.event_id.encode()
    assert h["schema-version"] == b"3"


def test_an_empty_key_gives_no_subject():
    assert "ce_subject" not in dict(_envelope(key="").to_headers())


def test_the_cloudevents_sdk_reads_the_headers():
    env = _envelope()
    event = from_binary(
        KafkaMessage(dict(env.to_headers()), b"order-1", b"\x00avro"),
        data_unmarshaller=lambda body: body,
    )
    assert event["specversion"] == "1.0"
    assert event["id"] == env.event_id
    assert event["type"] == "OrderCreated"
    assert event["source"] == "/choreo/orders"
    assert datetime.fromisoformat(event["time"]) == env.occurred_at
    assert event["subject"] == "order-1"
    assert event["datacontenttype"] == "application/avro"
    assert event.get_data() == b"\x00avro"


def test_cloudevents_only_headers_make_the_envelope():
    env = _envelope()
    got = Envelope.from_headers(_cloudevents_only(env), b"order-1", 3)
    assert got == env._replace(correlation_id=env.event_id, causation_id=None)


def test_cloudevents_only_without_a_body_version_says_zero():
    env = _envelope()
    assert Envelope.from_headers(_cloudevents_only(env), b"order-1").schema_version == 0


def test_choreo_headers_win_over_cloudevents_ones():
    env = _envelope()
    headers = [(k, b"Other" if k == "ce_type" else v) for k, v in env.to_headers()]
    assert Envelope.from_headers(headers, b"order-1", 9) == env


def test_an_event_built_by_the_cloudevents_sdk_reads_as_an_envelope():
    event_id = new_event_id()
    event = CloudEvent(
        {
            "id": event_id,
            "type": "OrderCreated",
            "source": "https://shop.example/orders",
            "time": "2026-12-06T15:04:05Z",
            "subject": "order-9",
            "datacontenttype": "application/avro",
            "partitionkey": "order-9",
        },
        b"body",
    )
    message = to_binary(event, data_marshaller=lambda body: body)
    env = Envelope.from_headers(list(message.headers.items()), message.key.encode(), 2)
    assert env.event_id == event_id
    assert env.event_type == "OrderCreated"
    assert env.schema_version == 2
    assert env.occurred_at == datetime(2026, 12, 6, 15, 4, 5, tzinfo=UTC)
    assert env.producer == "https://shop.example/orders"  # a foreign source as it is
    assert env.correlation_id == event_id
    assert env.key == "order-9"


def test_without_a_kafka_key_the_subject_is_the_key():
    env = _envelope()
    assert Envelope.from_headers(_cloudevents_only(env), None, 3).key == "order-1"


def _ce_headers(**changes: bytes | None) -> list[tuple[str, bytes]]:
    h = dict(_cloudevents_only(_envelope()))
    for name, value in changes.items():
        if value is None:
            h.pop(name)
        else:
            h[name] = value
    return list(h.items())


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "missing header event-id or ce_id"),
        ([("content-type", b"application/avro")], "missing header event-id or ce_id"),
        (_ce_headers(ce_type=None), "missing header ce_type"),
        (_ce_headers(ce_time=None), "missing header ce_time"),
        (_ce_headers(ce_source=None), "missing header ce_source"),
        (_ce_headers(ce_specversion=None), "missing header ce_specversion"),
        (_ce_headers(ce_specversion=b"0.3"), "unsupported CloudEvents ce_specversion '0.3'"),
        (_ce_headers(ce_id=b"order-1-created"), "ce_id 'order-1-created' is not a UUID"),
        (_ce_headers(ce_time=b"2026-12-06T15:04:05"), "ce_time .* has no UTC offset"),
        (_ce_headers(ce_time=b"yesterday"), "bad envelope header"),
        (_ce_headers(ce_type=b"\xff"), "bad envelope header"),
    ],
)
def test_headers_that_make_no_envelope_say_why(headers, reason):
    with pytest.raises(EnvelopeError, match=reason):
        Envelope.from_headers(headers, b"k", 1)


def test_a_required_header_without_a_value_is_named():
    headers = [(k, None if k == "ce_type" else v) for k, v in _ce_headers()]
    with pytest.raises(EnvelopeError, match="header ce_type has no value"):
        Envelope.from_headers(headers, b"k", 1)  # type: ignore[arg-type]
    env = _envelope()
    headers = [(k, None if k == "occurred-at" else v) for k, v in env.to_headers()]
    with pytest.raises(EnvelopeError, match="header occurred-at has no value"):
        Envelope.from_headers(headers, b"k")  # type: ignore[arg-type]


def test_parking_reads_type_and_id_from_cloudevents_headers_before_decoding():
    env = _envelope()
    record = _record(_cloudevents_only(env))
    assert parking.record_event_type(record) == "OrderCreated"
    assert parking.record_event_id(record) == env.event_id
    both = _record([(k, b"Other" if k == "ce_type" else v) for k, v in env.to_headers()])
    assert parking.record_event_type(both) == "OrderCreated"
    assert parking.record_event_type(_record([])) is None


def test_a_projection_reads_a_cloudevents_only_record_with_the_body_version():
    codec = AvroCodec(Catalogue.load(FIXTURES))
    env = _envelope(event_type="Ping", key="a")
    body = codec.encode("Ping", {"aggregate_id": "a", "seq": 1, "note": ""})
    record = ConsumerRecord("t", 0, 7, 0, 0, b"a", body, None, 1, 1, _cloudevents_only(env))
    other = dataclasses.replace(record, offset=8, headers=[("ce_type", b"Pong")])  # not decoded
    batch = decode_records("p", {"Ping": None}, codec, [record, other])
    (event,) = batch.events
    assert event.envelope == env._replace(
        schema_version=codec.catalogue.latest("Ping").version,
        correlation_id=env.event_id,
        causation_id=None,
    )
    assert (batch.undecodable, event.payload["seq"]) == (0, 1)


def test_a_cloudevents_only_dead_letter_is_listed_and_checked_by_its_ce_type():
    codec = AvroCodec(Catalogue.load(FIXTURES).retarget({"Ping": "t", "Pong": "t-pong"}))
    env = _envelope(event_type="Ping", key="a")
    body = codec.encode("Ping", {"aggregate_id": "a", "seq": 1, "note": ""})

    def letter(ce_type: bytes) -> DeadLetter:
        headers = [(k, ce_type if k == "ce_type" else v) for k, v in _cloudevents_only(env)]
        headers += [(DLQ_TOPIC, b"t"), (DLQ_REASON, b"broken")]
        record = ConsumerRecord("t.dlq", 0, 3, 0, 0, b"a", body, None, 1, 1, headers)
        return DeadLetter("t.dlq", 0, 3, record)

    good = letter(b"Ping")
    summary = good.summary()
    assert (summary["event_type"], summary["event_id"]) == ("Ping", env.event_id)
    assert redrive_target(good, codec) == "t"
    with pytest.raises(RedriveRefused, match="its ce_type header says Pong, its bytes Ping"):
        redrive_target(letter(b"Pong"), codec)
