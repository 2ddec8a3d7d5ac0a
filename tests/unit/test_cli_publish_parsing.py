"""``choreo publish``'s parsing, without Kafka: --field values, JSON Lines records, timestamps,
key inference, the fast contract check and what is shown to the user."""

from __future__ import annotations

import argparse
import copy
import io
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from fastavro import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from events.avro.names import NamedTypes
from events.avro.validate import Validator, first_error
from events.catalogue import Catalogue, SchemaVersion, schema_fingerprint
from events.cli import catalogue_view, publish, tail
from events.cli.catalogue_view import field_line, type_name
from events.cli.payloads import (
    InputError,
    LineRecord,
    NoKeyError,
    UnknownTypeError,
    infer_key,
    key_field,
    parse_fields,
    parse_line,
    parse_value,
    resolve_event_type,
)
from events.cli.preparer import EventIds, Preparer
from events.cli.progress import Meter
from events.cli.tail import decode_message, tail_topic
from events.cli.timestamps import normalise_payload, to_epoch
from events.codec import AvroCodec
from events.envelope import Envelope

CATALOGUE = Catalogue.load()
ORDER_PLACED = CATALOGUE.latest("OrderPlaced").raw
ORDER_ID = "7c9e6679-7425-40de-944b-e07fc1f99a7b"


def order_placed(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "order_id": ORDER_ID,
        "customer_id": "c-1",
        "lines": [{"sku": "widget", "quantity": 2, "unit_price_cents": 1500}],
        "shipping_address": {
            "name": "Ann Example",
            "line1": "1 Main Street",
            "city": "Paris",
            "postal_code": "75001",
            "country": "FR",
        },
        "placed_at": "2026-03-01T12:00:00Z",
    }
    payload.update(changes)
    return payload


# --------------------------------------------------------------------------- --field values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('["a", 1]', ["a", 1]),
        ('{"sku": "a"}', {"sku": "a"}),
        ('"quoted"', "quoted"),
        ("plain text", "plain text"),
        ("", ""),
        ("two", "two"),
    ],
)
def test_a_value_is_json_when_it_parses_else_text(text, expected):
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["75001", "42", "true", "null", "[1]"])
def test_a_string_field_keeps_its_text(text):
    assert parse_value(text, "string") == text


def test_a_string_field_takes_a_quoted_json_string_unquoted():
    assert parse_value('"a b"', "string") == "a b"


def test_an_optional_string_field_takes_null_as_null():
    assert parse_value("null", ["null", "string"]) is None
    assert parse_value("none", ["null", "string"]) == "none"


def test_dotted_names_build_nested_records_and_lists_come_as_json():
    payload = parse_fields(
        [
            f"order_id={ORDER_ID}",
            "customer_id=42",
            'lines=[{"sku": "a", "quantity": 1, "unit_price_cents": 100}]',
            "shipping_address.country=DE",
            "shipping_address.postal_code=10115",
        ],
        ORDER_PLACED,
    )
    assert payload == {
        "order_id": ORDER_ID,
        "customer_id": "42",  # a string in the contract: not turned into a number
        "lines": [{"sku": "a", "quantity": 1, "unit_price_cents": 100}],
        "shipping_address": {"country": "DE", "postal_code": "10115"},
    }


def test_fields_are_set_on_top_of_a_json_document():
    base = order_placed()
    payload = parse_fields(["shipping_address.country=DE", "customer_id=c-9"], ORDER_PLACED, base)
    assert payload["shipping_address"]["country"] == "DE"
    assert payload["shipping_address"]["city"] == "Paris"
    assert payload["customer_id"] == "c-9"


def test_numbers_in_non_string_fields_are_numbers():
    payload = parse_fields(["lines=[]", "quantity=3"], ORDER_PLACED)
    assert payload == {"lines": [], "quantity": 3}


@pytest.mark.parametrize("pair", ["customer_id", "=x", "a..b=1", ".a=1", "a.=1"])
def test_a_malformed_field_is_named(pair):
    with pytest.raises(InputError, match="name=value"):
        parse_fields([pair])


def test_a_field_under_a_non_object_is_refused():
    with pytest.raises(InputError, match="customer_id is already set to 'x'"):
        parse_fields(["customer_id=x", "customer_id.deep=1"])


# --------------------------------------------------------------------------- JSON Lines


def test_a_line_gives_type_payload_and_optional_envelope_fields():
    line = (
        '{"type": "OrderPlaced", "payload": {"a": 1}, "key": "k", '
        f'"event_id": "{ORDER_ID}", "correlation_id": "c"}}\n'
    ).encode()
    assert parse_line(line) == LineRecord("OrderPlaced", {"a": 1}, "k", ORDER_ID, "c")
    assert parse_line('{"type": "X", "payload": {}}') == LineRecord("X", {})


@pytest.mark.parametrize(
    ("line", "message", "event_type"),
    [
        ('{"type": "OrderPlaced", "payload": {', "not valid JSON: Expecting", None),
        (b'{"type": "\xff"}', "not UTF-8 text", None),
        ("[1, 2]", "expected a JSON object, got a list", None),
        ('{"type": "OrderPlaced", "paylod": {}}', "unknown key 'paylod'", None),
        ('{"payload": {}}', '"type" must name the event type', None),
        ('{"type": 3, "payload": {}}', '"type" must name the event type', None),
        ('{"type": "OrderPlaced"}', '"payload" must be a JSON object, got missing', "OrderPlaced"),
        ('{"type": "OrderPlaced", "payload": [1]}', "got a list", "OrderPlaced"),
        ('{"type": "OrderPlaced", "payload": {}, "key": 7}', '"key" must be', "OrderPlaced"),
        ('{"type": "OrderPlaced", "payload": {}, "event_id": ""}', '"event_id"', "OrderPlaced"),
    ],
)
def test_a_bad_line_says_what_is_wrong(line, message, event_type):
    with pytest.raises(InputError, match=message) as caught:
        parse_line(line)
    assert caught.value.event_type == event_type


def test_a_json_error_names_the_column():
    with pytest.raises(InputError, match=r"\(column 12\)"):
        parse_line('{"type": 1 "payload": {}}')


# --------------------------------------------------------------------------- event types


def test_an_unknown_type_lists_close_matches():
    with pytest.raises(UnknownTypeError, match="did you mean OrderPlaced"):
        resolve_event_type(CATALOGUE.event_types, "OrderPlace")
    with pytest.raises(UnknownTypeError, match="did you mean OrderPlaced"):
        resolve_event_type(CATALOGUE.event_types, "orderplaced")


def test_an_unknown_type_with_no_close_match_lists_all_types():
    with pytest.raises(
        UnknownTypeError, match="known types: CustomerNotified, FundsCredited, FundsDeposited"
    ):
        resolve_event_type(CATALOGUE.event_types, "Zzz")


def test_a_known_type_resolves_to_itself():
    assert resolve_event_type(CATALOGUE.event_types, "StockRestocked") == "StockRestocked"


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("payload", "order", "expected"),
    [
        ({"customer_id": "c", "order_id": "o", "sku": "s"}, None, "o"),
        ({"deposit_id": "d", "customer_id": "c"}, ["deposit_id", "customer_id"], "c"),
        ({"restock_id": "r", "sku": "s"}, ["restock_id", "sku"], "s"),
        ({"shipment_id": "s", "payment_id": "p"}, ["payment_id", "shipment_id"], "p"),
        ({"id": 42}, None, "42"),
        ({"order_id": uuid.UUID(ORDER_ID)}, None, ORDER_ID),
        ({"order_id": "", "customer_id": "c"}, None, "c"),
        ({"reason": "x", "count": 3}, None, None),
        ({"flag_id": True}, None, None),
    ],
)
def test_the_key_comes_from_the_aggregate_id(payload, order, expected):
    assert infer_key(payload, order) == expected


def test_every_catalogue_type_has_an_inferable_key_field():
    for event_type in CATALOGUE.event_types:
        fields = CATALOGUE.latest(event_type).field_names
        assert key_field(fields) in fields, event_type
    assert key_field(CATALOGUE.latest("FundsDeposited").field_names) == "customer_id"
    assert key_field(CATALOGUE.latest("StockRestocked").field_names) == "sku"
    assert key_field(["reason"]) is None


# --------------------------------------------------------------------------- timestamps

STAMPED: dict[str, Any] = {
    "type": "record",
    "name": "Stamped",
    "namespace": "t",
    "fields": [
        {"name": "happened_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "seen_at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {
            "name": "steps",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Step",
                    "fields": [
                        {
                            "name": "done_at",
                            "type": {"type": "long", "logicalType": "timestamp-millis"},
                        }
                    ],
                },
            },
        },
        {
            "name": "archived_at",
            "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            "default": None,
        },
        {"name": "note", "type": "string"},
    ],
}
NEW_YEAR_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_iso_8601_with_a_timezone_becomes_epoch_units():
    payload = normalise_payload(
        STAMPED,
        {
            "happened_at": "2026-01-01T00:00:00Z",
            "seen_at": "2026-01-01T02:00:00.000001+02:00",
            "steps": [{"done_at": "2026-01-01T00:00:00.250+00:00"}],
            "note": "2026-01-01T00:00:00Z",  # a string field: left alone
        },
    )
    assert payload["happened_at"] == NEW_YEAR_MS
    assert payload["seen_at"] == NEW_YEAR_MS * 1000 + 1
    assert payload["steps"] == [{"done_at": NEW_YEAR_MS + 250}]
    assert payload["note"] == "2026-01-01T00:00:00Z"


def test_now_and_missing_at_fields_are_the_current_time():
    before = to_epoch(datetime.now(UTC), 1000)
    payload = normalise_payload(STAMPED, {"happened_at": "now", "steps": [{}], "note": ""})
    after = to_epoch(datetime.now(UTC), 1000)
    assert before <= payload["happened_at"] <= after
    assert before * 1000 <= payload["seen_at"] <= (after + 1) * 1000
    assert before <= payload["steps"][0]["done_at"] <= after
    assert "archived_at" not in payload  # has a default: left to it


def test_epoch_numbers_and_the_input_are_left_as_given():
    as_given: dict[str, Any] = {"happened_at": 5, "seen_at": None, "steps": [], "note": "n"}
    assert normalise_payload(STAMPED, as_given) == as_given
    nested = {"happened_at": 5, "steps": [{"done_at": "now"}], "note": "n"}
    normalise_payload(STAMPED, nested)
    assert nested["steps"] == [{"done_at": "now"}]  # normalise_payload works on a copy


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-01-01T00:00:00", "happened_at: timestamp '2026-01-01T00:00:00' needs a timezone"),
        ("yesterday", "happened_at: expected an ISO 8601 timestamp with a timezone or 'now'"),
    ],
)
def test_a_bad_timestamp_is_named(value, message):
    with pytest.raises(InputError, match=message):
        normalise_payload(STAMPED, {"happened_at": value})


def test_a_nested_bad_timestamp_names_its_path():
    with pytest.raises(InputError, match=r"steps\[1\].done_at: expected an ISO 8601"):
        normalise_payload(STAMPED, {"steps": [{"done_at": "now"}, {"done_at": "soon"}]})


def test_epoch_conversion_writes_what_fastavro_writes_for_a_datetime():
    codec = AvroCodec(CATALOGUE)
    for moment in [
        datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 14, 0, tzinfo=UTC) + timedelta(microseconds=1500),
    ]:
        as_datetime = codec.encode("OrderPlaced", order_placed(placed_at=moment))
        as_epoch = codec.encode("OrderPlaced", order_placed(placed_at=to_epoch(moment, 1000)))
        assert as_datetime == as_epoch, moment


# --------------------------------------------------------------------------- preparing


def test_a_valid_payload_is_encoded_keyed_and_enveloped():
    codec = AvroCodec(CATALOGUE.prefixed("env."))
    record = Preparer(codec).prepare("OrderPlaced", order_placed())
    env = record.envelope
    assert (record.topic, env.key, env.schema_version) == ("env.orders.requests", ORDER_ID, 1)
    assert env.correlation_id == env.event_id
    assert uuid.UUID(env.event_id).version == 4
    decoded = codec.decode(record.value).payload
    assert decoded["placed_at"] == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_the_first_bad_field_is_named_like_the_contract_check_names_it():
    preparer = Preparer(AvroCodec(CATALOGUE))
    bad = order_placed(lines=[{"sku": "a", "quantity": "two", "unit_price_cents": 1}])
    with pytest.raises(InputError) as caught:
        preparer.prepare("OrderPlaced", bad)
    assert str(caught.value) == "lines[0].quantity: expected int, got str 'two'"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"order_id": "not-a-uuid"}, "order_id: 'not-a-uuid' is not a UUID"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"customer_id": None}, "customer_id: expected string, got NoneType None"),
        ({"shipping_address": {"country": "FR"}}, "shipping_address.name: required field"),
        ({"lines": [{"sku": "a", "quantity": 2**40, "unit_price_cents": 1}]}, "out of range"),
    ],
)
def test_contract_violations_are_refused(changes, message):
    with pytest.raises(InputError, match=message):
        Preparer(AvroCodec(CATALOGUE)).prepare("OrderPlaced", order_placed(**changes))


def test_envelope_fields_given_are_kept_and_a_bad_event_id_refused():
    preparer = Preparer(AvroCodec(CATALOGUE))
    record = preparer.prepare(
        "OrderPlaced", order_placed(), key="k", event_id=ORDER_ID, correlation_id="corr"
    )
    env = record.envelope
    assert (env.key, env.event_id, env.correlation_id) == ("k", ORDER_ID, "corr")
    with pytest.raises(InputError, match="event id 'abc' is not a UUID"):
        preparer.prepare("OrderPlaced", order_placed(), event_id="abc")


def test_no_key_and_no_id_field_asks_for_a_key():
    schema = {
        "type": "record",
        "name": "Note",
        "namespace": "t",
        "fields": [{"name": "text", "type": "string"}],
    }
    catalogue = Catalogue([_version("Note", schema)], []).retarget({"Note": "notes"})
    preparer = Preparer(AvroCodec(catalogue))
    with pytest.raises(NoKeyError):
        preparer.prepare("Note", {"text": "hi"})
    assert preparer.prepare("Note", {"text": "hi"}, key="k").envelope.key == "k"


def _version(event_type: str, raw: dict[str, Any]) -> SchemaVersion:
    return SchemaVersion(event_type, "t", 1, raw, parse_schema(raw), schema_fingerprint(raw))


def test_the_envelope_names_the_cli_and_survives_its_headers():
    record = Preparer(AvroCodec(CATALOGUE)).prepare("OrderPlaced", order_placed())
    env = record.envelope
    assert (env.producer, env.event_type, env.causation_id) == ("choreo-cli", "OrderPlaced", None)
    assert Envelope.from_headers(env.to_headers(), env.key.encode()) == env


def test_event_ids_are_distinct_version_4_uuids():
    ids = EventIds()
    made = [ids() for _ in range(10_000)]  # crosses a refill of the random pool
    assert len(set(made)) == len(made)
    for text in made[:50] + made[-50:]:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


# --------------------------------------------------------------------------- the fast check

EVERYTHING: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "t",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "Two", "size": 2}},
        {"name": "m", "type": {"type": "map", "values": "long"}},
        {"name": "o", "type": ["null", "string", "Colour"], "default": None},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [
                    {"name": "x", "type": "int"},
                    {"name": "y", "type": "int", "default": 1},
                ],
            },
        },
        {"name": "inners", "type": {"type": "array", "items": "Inner"}},
        {"name": "again", "type": ["null", "t.Inner"], "default": None},
    ],
}
VALID_EVERYTHING: dict[str, Any] = {
    "s": "text",
    "u": ORDER_ID,
    "i": 1,
    "l": 2**40,
    "f": 1.5,
    "b": True,
    "raw": b"\x00",
    "ts": datetime(2026, 1, 1, tzinfo=UTC),
    "e": "RED",
    "fx": b"ab",
    "m": {"a": 1},
    "o": "BLUE",
    "inner": {"x": 1},
    "inners": [{"x": 1, "y": 2}],
    "again": {"x": 3},
}

EDGES = [2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 0, -1]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGES),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["RED", "BLUE", ORDER_ID, ORDER_ID.upper(), "{" + ORDER_ID + "}", "x"]),
    st.binary(max_size=3),
    st.sampled_from([datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)]),
    st.builds(uuid.uuid4),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["x", "y", "z"]), inner)
    ),
    max_leaves=6,
)
Path_ = tuple[Any, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every node's path in a payload (dict keys and list indices), the root excluded."""
    children: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    out = []
    for step, child in children:
        out.append((*prefix, step))
        out += _paths(child, (*prefix, step))
    return out


def _mutate(payload: Any, path: Path_, value: Any, how: str) -> Any:
    """A copy of ``payload`` with the node at ``path`` replaced or deleted, or with an
    extra key ``zz`` beside it."""
    payload = copy.deepcopy(payload)
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "add" and isinstance(parent, dict):
        parent["zz"] = value
    else:
        parent[path[-1]] = value
    return payload


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(["everything", "OrderPlaced", "StockRejected", "OrderCancelled"]),
    st.data(),
    values,
    st.sampled_from(["replace", "replace", "replace", "delete", "add"]),
)
def test_the_fast_check_accepts_exactly_what_the_worded_check_accepts(name, data, value, how):
    # One validator, two paths: the yes/no one publish runs per record, and the one that
    # words the fault after a no. They must never disagree.
    schema, valid = _schema_and_valid(name)
    path = data.draw(st.sampled_from(_paths(valid)))
    payload = _mutate(valid, path, value, how)
    validator = Validator(schema)
    assert validator.ok(payload) == (validator.explain(payload) is None), payload


TRICKY = [
    *EDGES,
    None,
    True,
    1.5,
    "",
    "x",
    "RED",
    ORDER_ID,
    ORDER_ID.upper(),
    "urn:uuid:" + ORDER_ID,
    ORDER_ID[:-1],
    uuid.UUID(ORDER_ID),
    b"",
    b"ab",
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=UTC),
    [],
    [{"x": 1}],
    {},
    {"x": 1},
    {"x": 1, "zz": 2},
]


@pytest.mark.parametrize("name", ["everything", "OrderPlaced", "StockRejected", "OrderCancelled"])
def test_the_fast_check_agrees_on_every_tricky_value_at_every_node(name):
    schema, valid = _schema_and_valid(name)
    validator = Validator(schema)
    check, first_error = validator.ok, validator.explain
    for path in _paths(valid):
        for how in ("delete", "add"):
            payload = _mutate(valid, path, 1, how)
            assert check(payload) == (first_error(payload) is None), (path, how)
        for value in TRICKY:
            payload = _mutate(valid, path, value, "replace")
            assert check(payload) == (first_error(payload) is None), (path, value)


def _schema_and_valid(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name == "everything":
        return EVERYTHING, VALID_EVERYTHING
    examples = {
        "OrderPlaced": normalise_payload(ORDER_PLACED, order_placed()),
        "StockRejected": {
            "order_id": ORDER_ID,
            "customer_id": "c",
            "reason": "r",
            "shortages": [{"sku": "a", "requested": 2, "available": 1}],
            "rejected_at": 1,
        },
        "OrderCancelled": {
            "order_id": ORDER_ID,
            "customer_id": "c",
            "reason": "r",
            "failed_step": None,
            "cancelled_at": 1,
        },
    }
    return CATALOGUE.latest(name).raw, examples[name]


def test_the_valid_examples_are_valid():
    for name in ["everything", "OrderPlaced", "StockRejected", "OrderCancelled"]:
        schema, valid = _schema_and_valid(name)
        assert first_error(schema, valid) is None, name
        assert Validator(schema).ok(valid), name


# --------------------------------------------------------------------------- display


def test_field_lines_show_type_and_how_to_leave_a_field_out():
    names = NamedTypes(EVERYTHING)
    lines = {f["name"]: field_line(f, names) for f in EVERYTHING["fields"]}
    assert lines["u"] == "u: uuid"
    assert lines["ts"] == "ts: timestamp-millis"  # not named *_at: not defaulted
    assert lines["o"] == "o: string | Colour? (optional, default null)"
    assert lines["inners"] == "inners: array<Inner>"
    assert lines["m"] == "m: map<long>"
    placed = CATALOGUE.latest("OrderPlaced").raw
    placed_at = next(f for f in placed["fields"] if f["name"] == "placed_at")
    line = field_line(placed_at, NamedTypes(placed))
    assert line == "placed_at: timestamp-millis (now if omitted)"
    assert type_name({"type": "fixed", "name": "a.b.Two", "size": 2}, names) == "Two"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_redraws_a_bar_with_count_rate_and_time_left():
    stream, clock = io.StringIO(), Clock()
    meter = Meter("publishing", 1024, stream=stream, tty=True, clock=clock)
    clock.now = 1.0
    meter.update(512, 512)
    clock.now = 2.0
    meter.update(768, 768)
    meter.finish()
    out = stream.getvalue()
    last = out.rsplit("\r", 1)[-1]  # the bar as left on screen
    assert "━" in last and "publishing 768 events" in last and "75%" in last
    assert "384 events/s" in last and "0:00:01" in last  # 256 left at 256/s
    assert out.endswith("\n\x1b[?25h")  # a new line after the bar; the cursor shown again


def test_progress_elsewhere_prints_a_plain_line_now_and_then():
    stream, clock = io.StringIO(), Clock()
    meter = Meter("validating", None, stream=stream, tty=False, every_s=2.0, clock=clock)
    clock.now = 0.5
    meter.update(100, 256)  # too soon
    clock.now = 2.5
    meter.update(200, 512)  # a line
    clock.now = 9.0
    meter.update(300, 513)  # not a multiple of 256: the clock is not even read
    meter.finish()
    assert stream.getvalue() == "validating 512 events 205 events/s\n"


def test_a_short_run_off_a_terminal_prints_nothing():
    stream, clock = io.StringIO(), Clock()
    with Meter("publishing", 1000, stream=stream, tty=False, clock=clock) as meter:
        for count in range(1, 1001):
            meter.update(count, count)
    assert stream.getvalue() == ""


def test_an_undecodable_message_is_shown_with_the_reason():
    codec = AvroCodec(CATALOGUE)
    message = SimpleNamespace(
        topic="t", partition=1, offset=7, key=b"k", value=b"not avro at all", headers=[]
    )
    shown = decode_message(codec, message)
    assert shown.text() == "1@7 UNDECODABLE key=k: bad magic 6e6f, expected c301 (15 bytes)"
    assert '"error":"bad magic 6e6f, expected c301 (15 bytes)"' in shown.json()


def test_a_decodable_message_is_shown_compactly_even_without_an_envelope():
    codec = AvroCodec(CATALOGUE)
    record = Preparer(codec).prepare("OrderCancellationRequested", _cancel())
    good = SimpleNamespace(
        topic="t",
        partition=0,
        offset=3,
        key=b"k",
        value=record.value,
        headers=record.envelope.to_headers(),
    )
    assert decode_message(codec, good).text() == (
        f"0@3 OrderCancellationRequested key=k id={record.envelope.event_id} "
        f'{{"order_id":"{ORDER_ID}",'
        '"reason":"changed my mind","requested_at":"2026-01-01T00:00:00+00:00"}'
    )
    bare = SimpleNamespace(**{**vars(good), "headers": []})
    assert decode_message(codec, bare).text().endswith("(missing header event-id or ce_id)")


def _cancel() -> dict[str, Any]:
    return {"order_id": ORDER_ID, "reason": "changed my mind", "requested_at": NEW_YEAR_MS}


def test_tail_adds_the_topic_prefix_unless_given():
    assert tail_topic("orders.requests", "") == "orders.requests"
    assert tail_topic("orders.requests", "dev.") == "dev.orders.requests"
    assert tail_topic("dev.orders.requests", "dev.") == "dev.orders.requests"


def test_the_commands_register_and_their_help_explains_timestamps():
    parser = argparse.ArgumentParser(prog="choreo")
    sub = parser.add_subparsers(dest="command")
    for module in (publish, catalogue_view, tail):
        module.register(sub)
    args = parser.parse_args(["publish", "OrderPlaced", "--field", "a=1", "--field", "b=2"])
    assert args.field == ["a=1", "b=2"] and args.output == "text"
    assert parser.parse_args(["tail", "t", "--max", "3"]).max == 3
    assert parser.parse_args(["events"]).event_type is None
    help_text = sub.choices["publish"].format_help()
    assert "*_at is set to now" in help_text and "'now'" in help_text


def test_a_prepared_event_keeps_only_bytes_of_the_payload():
    record = Preparer(AvroCodec(CATALOGUE)).prepare("OrderPlaced", order_placed())
    assert record._fields == ("topic", "value", "envelope")
    assert isinstance(record.value, bytes)
