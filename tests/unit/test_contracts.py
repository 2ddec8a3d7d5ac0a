"""The saga's Avro contracts, its pydantic payload models and its topic catalogue agree.

No I/O besides reading ``schemas/``: the catalogue is loaded once, the codec works in memory.
"""

from __future__ import annotations

import json
import re
import types
import typing
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ValidationError
from pydantic.fields import FieldInfo

from events.avro.bounds import INT_RANGE, LONG_RANGE
from events.catalogue import SCHEMAS_ROOT, Catalogue
from events.codec import AvroCodec, ContractViolation
from events.models import EventModel
from schemas.models import (
    ALL_EVENTS,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_POSTAL_CODE_LENGTH,
    MAX_QUANTITY,
    MAX_REASON_LENGTH,
    MAX_UNIT_PRICE_CENTS,
    Address,
    CustomerNotified,
    FundsCredited,
    FundsDeposited,
    OrderCancellationRequested,
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    OrderStuck,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
    Shortage,
    SkuPriced,
    StockLine,
    StockReceived,
    StockRejected,
    StockReleased,
    StockReserved,
    StockRestocked,
    Uuid,
)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def codec(catalogue: Catalogue) -> AvroCodec:
    return AvroCodec(catalogue)


def _version(path: Path) -> int:
    return int(path.stem.removeprefix("v"))


def _schema_files() -> dict[str, dict[str, Any]]:
    """Event type -> raw latest schema (the one the models mirror), straight from the files."""
    latest: dict[str, Path] = {}
    for path in SCHEMAS_ROOT.glob("*/*/v*.avsc"):
        best = latest.get(path.parent.name)
        if best is None or _version(path) > _version(best):
            latest[path.parent.name] = path
    return {name: json.loads(path.read_text()) for name, path in sorted(latest.items())}


# --- (a) models and schemas mirror each other ----------------------------------------------


def test_every_model_has_a_schema_and_every_schema_a_model(catalogue: Catalogue) -> None:
    assert sorted(_schema_files()) == sorted(ALL_EVENTS)
    assert catalogue.event_types == sorted(ALL_EVENTS)
    for event_type, model in ALL_EVENTS.items():
        assert issubclass(model, EventModel)
        assert model.__name__ == model.event_type == event_type


def test_schemas_follow_the_conventions() -> None:
    def walk(schema: Any, namespace: str, where: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch, namespace, where)
        elif isinstance(schema, dict) and schema["type"] == "record":
            assert schema.get("namespace", namespace) == namespace, where
            assert schema.get("doc"), f"{where}: record without doc"
            for field in schema["fields"]:
                assert field.get("doc"), f"{where}.{field['name']}: field without doc"
                if isinstance(field["type"], list):
                    assert field["type"][0] == "null" and field.get("default", 0) is None, (
                        f"{where}.{field['name']}: optional fields are [null, T] default null"
                    )
                walk(field["type"], namespace, f"{where}.{field['name']}")
        elif isinstance(schema, dict) and schema["type"] == "array":
            walk(schema["items"], namespace, f"{where}[]")
        elif isinstance(schema, dict):
            assert schema["type"] != "enum", f"{where}: use a documented string, not an enum"

    for path in sorted(SCHEMAS_ROOT.glob("*/*/v*.avsc")):
        raw = json.loads(path.read_text())
        context = path.parent.parent.name
        assert raw["type"] == "record"
        assert raw["name"] == path.parent.name
        assert raw["namespace"] == f"choreo.{context}"
        walk(raw, f"choreo.{context}", raw["name"])


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        # Field(ge=...) inside an Annotated in a union stays a FieldInfo: use its constraints.
        flat = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return _unwrap(inner, [*metadata, *flat])
    return annotation, metadata


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _bounds(metadata: list[Any]) -> tuple[int | None, int | None]:
    low = high = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Gt):
            low = int(m.gt) + 1  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Le):
            high = int(m.le)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Lt):
            high = int(m.lt) - 1  # type: ignore[call-overload]
    return low, high


def _type_problems(avro: Any, annotation: Any, metadata: list[Any], where: str) -> list[str]:
    """Why a model field's type cannot carry exactly the values of an Avro type."""
    annotation, metadata = _unwrap(annotation, metadata)
    py_union = _union_args(annotation)
    if isinstance(avro, list):
        avro_branches = [b for b in avro if b != "null"]
        py_branches = [a for a in (py_union or (annotation,)) if a is not type(None)]
        avro_nullable = "null" in avro
        py_nullable = py_union is not None and type(None) in py_union
        if avro_nullable != py_nullable:
            return [f"{where}: nullable in Avro is {avro_nullable}, in the model {py_nullable}"]
        if len(avro_branches) != 1 or len(py_branches) != 1:
            return [f"{where}: only [null, T] unions are supported"]
        return _type_problems(avro_branches[0], py_branches[0], metadata, where)
    if py_union is not None:
        return [f"{where}: nullable (or a union) in the model, not in Avro"]
    if isinstance(avro, str):
        avro = {"type": avro}
    kind, logical = avro["type"], avro.get("logicalType")
    if isinstance(kind, dict | list):
        return _type_problems(kind, annotation, metadata, where)

    if kind == "record":
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return [f"{where}: Avro record {avro['name']}, model has {annotation}"]
        if annotation.__name__ != avro["name"]:
            return [f"{where}: Avro record {avro['name']}, model {annotation.__name__}"]
        return _record_problems(avro, annotation, where)
    if kind == "array":
        if typing.get_origin(annotation) is not list:
            return [f"{where}: Avro array, model has {annotation}"]
        (item,) = typing.get_args(annotation)
        return _type_problems(avro["items"], item, [], f"{where}[]")

    expected: dict[tuple[str, str | None], type] = {
        ("string", None): str,
        ("string", "uuid"): str,
        ("int", None): int,
        ("long", None): int,
        ("long", "timestamp-millis"): AwareDatetime,
        ("boolean", None): bool,
        ("double", None): float,
    }
    want = expected.get((kind, logical))
    if want is None:
        return [f"{where}: no mapping for Avro {kind}/{logical} in this test"]
    if annotation is not want:
        return [f"{where}: Avro {kind}/{logical} wants {want.__name__}, model has {annotation}"]
    if logical == "uuid" and not all(m in metadata for m in typing.get_args(Uuid)[1:]):
        return [f"{where}: a uuid field must be schemas.models.Uuid (accepts uuid.UUID)"]
    if logical is None and kind in ("int", "long"):
        floor, ceiling = INT_RANGE if kind == "int" else LONG_RANGE
        low, high = _bounds(metadata)
        if low is None or high is None or low < floor or high > ceiling:
            return [f"{where}: bounds [{low}, {high}] do not fit Avro {kind}"]
    return []


def _record_problems(schema: dict[str, Any], model: type[BaseModel], where: str) -> list[str]:
    avro_fields = {f["name"]: f for f in schema["fields"]}
    model_fields: dict[str, FieldInfo] = model.model_fields
    if list(avro_fields) != list(model_fields):
        return [f"{where}: Avro fields {list(avro_fields)} != model fields {list(model_fields)}"]
    problems: list[str] = []
    for name, field in avro_fields.items():
        info = model_fields[name]
        problems += _type_problems(field["type"], info.annotation, list(info.metadata), name)
        has_default = "default" in field
        if has_default != (not info.is_required()) or (
            has_default and field["default"] != info.default
        ):
            problems.append(f"{where}.{name}: Avro default and model default differ")
    return [p if p.startswith(where) else f"{where}.{p}" for p in problems]


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_model_fields_match_the_schema(event_type: str) -> None:
    schema = _schema_files()[event_type]
    assert _record_problems(schema, ALL_EVENTS[event_type], event_type) == []


def test_the_mirror_check_catches_a_mismatch() -> None:
    schema = _schema_files()["OrderCancelled"]
    renamed = {**schema, "fields": [{**f, "name": f"x_{f['name']}"} for f in schema["fields"]]}
    assert _record_problems(renamed, OrderCancelled, "OrderCancelled")
    required = {
        **schema,
        "fields": [
            {"name": f["name"], "type": "string", "doc": "d"} if f["name"] == "failed_step" else f
            for f in schema["fields"]
        ],
    }
    assert any("nullable" in p for p in _record_problems(required, OrderCancelled, "X"))


# --- (b) every event type round-trips through the codec ------------------------------------

AT = datetime(2025, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)
ORDER = "7d444840-9dc0-11d1-b245-5ffdce74fad2"
CUSTOMER = "cust-42"
ADDRESS = Address(
    name="Ada Lovelace",
    line1="12 St James's Square",
    city="London",
    postal_code="SW1Y 4JH",
    country="GB",
)
LINES = [
    OrderLine(sku="SKU-BOOK", quantity=2, unit_price_cents=1_999),
    OrderLine(sku="SKU-PEN", quantity=1, unit_price_cents=0),
]
STOCK = [StockLine(sku="SKU-BOOK", quantity=2), StockLine(sku="SKU-PEN", quantity=1)]

SAMPLES: list[EventModel] = [
    OrderPlaced(
        order_id=ORDER, customer_id=CUSTOMER, lines=LINES, shipping_address=ADDRESS, placed_at=AT
    ),
    OrderCreated(
        order_id=ORDER,
        customer_id=CUSTOMER,
        lines=LINES,
        total_cents=3_998,
        shipping_address=ADDRESS,
        created_at=AT,
    ),
    OrderCancellationRequested(order_id=ORDER, reason="changed my mind", requested_at=AT),
    OrderCompleted(
        order_id=ORDER,
        customer_id=CUSTOMER,
        total_cents=3_998,
        shipment_id="SHP-1",
        completed_at=AT,
    ),
    OrderRejected(
        order_id=ORDER,
        customer_id=CUSTOMER,
        reason="out of stock",
        failed_step="inventory",
        rejected_at=AT,
    ),
    OrderCancelled(order_id=ORDER, customer_id=CUSTOMER, reason="by customer", cancelled_at=AT),
    OrderCancelled(
        order_id=ORDER,
        customer_id=CUSTOMER,
        reason="no carrier",
        failed_step="shipping",
        cancelled_at=AT,
    ),
    OrderStuck(
        order_id=ORDER,
        customer_id=CUSTOMER,
        waiting_on="shipping",
        waiting_since=AT,
        deadline_at=AT + timedelta(minutes=5),
        detected_at=AT + timedelta(minutes=5, seconds=3),
    ),
    StockRestocked(
        restock_id="0b7e9a4c-2f0e-4b8e-9b8a-3c1d2e4f5a6b",
        sku="SKU-BOOK",
        quantity=10,
        restocked_at=AT,
    ),
    StockRestocked(
        restock_id="0b7e9a4c-2f0e-4b8e-9b8a-3c1d2e4f5a6b",
        sku="SKU-BOOK",
        quantity=10,
        restocked_at=AT,
        unit_price_cents=1_999,
    ),
    SkuPriced(
        sku="SKU-BOOK",
        unit_price_cents=1_999,
        restock_id="0b7e9a4c-2f0e-4b8e-9b8a-3c1d2e4f5a6b",
        priced_at=AT + timedelta(seconds=1),
    ),
    StockReserved(
        order_id=ORDER,
        customer_id=CUSTOMER,
        lines=STOCK,
        total_cents=3_998,
        shipping_address=ADDRESS,
        reserved_at=AT,
    ),
    StockRejected(
        order_id=ORDER,
        customer_id=CUSTOMER,
        reason="short",
        shortages=[Shortage(sku="SKU-BOOK", requested=2, available=0)],
        rejected_at=AT,
    ),
    StockRejected(order_id=ORDER, customer_id=CUSTOMER, reason="", shortages=[], rejected_at=AT),
    StockReleased(
        order_id=ORDER,
        customer_id=CUSTOMER,
        lines=STOCK,
        reason="payment declined",
        failed_step="payments",
        released_at=AT,
    ),
    StockReleased(
        order_id=ORDER, customer_id=CUSTOMER, lines=STOCK, reason="by customer", released_at=AT
    ),
    FundsDeposited(
        deposit_id="5f1c1a7e-8d2b-4c3a-a1b2-c3d4e5f6a7b8",
        customer_id=CUSTOMER,
        amount_cents=10_000,
        deposited_at=AT,
    ),
    FundsCredited(
        deposit_id="5f1c1a7e-8d2b-4c3a-a1b2-c3d4e5f6a7b8",
        customer_id=CUSTOMER,
        amount_cents=10_000,
        deposited_at=AT,
        credited_at=AT + timedelta(seconds=1),
    ),
    StockReceived(
        restock_id="0b7e9a4c-2f0e-4b8e-9b8a-3c1d2e4f5a6b",
        sku="SKU-BOOK",
        quantity=10,
        restocked_at=AT,
        received_at=AT + timedelta(seconds=1),
    ),
    PaymentCaptured(
        order_id=ORDER,
        customer_id=CUSTOMER,
        payment_id="PAY-1",
        amount_cents=3_998,
        shipping_address=ADDRESS,
        captured_at=AT,
    ),
    PaymentDeclined(
        order_id=ORDER,
        customer_id=CUSTOMER,
        amount_cents=3_998,
        reason="insufficient funds",
        balance_cents=12,
        declined_at=AT,
    ),
    PaymentRefunded(
        order_id=ORDER,
        customer_id=CUSTOMER,
        payment_id="PAY-1",
        amount_cents=3_998,
        reason="no carrier",
        failed_step="shipping",
        refunded_at=AT,
    ),
    PaymentRefunded(
        order_id=ORDER,
        customer_id=CUSTOMER,
        payment_id="PAY-1",
        amount_cents=3_998,
        reason="by customer",
        refunded_at=AT,
    ),
    ShipmentScheduled(
        order_id=ORDER,
        customer_id=CUSTOMER,
        shipment_id="SHP-1",
        carrier="royal-mail",
        shipping_address=ADDRESS,
        scheduled_at=AT,
    ),
    ShipmentFailed(order_id=ORDER, customer_id=CUSTOMER, reason="no carrier", failed_at=AT),
    ShipmentCancelled(order_id=ORDER, shipment_id="SHP-1", reason="cancelled", cancelled_at=AT),
    CustomerNotified(
        notification_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        order_id=ORDER,
        customer_id=CUSTOMER,
        order_status="COMPLETED",
        message="Your order is on its way.",
        notified_at=AT,
    ),
]


def test_there_is_a_sample_of_every_event_type() -> None:
    assert {s.event_type for s in SAMPLES} == set(ALL_EVENTS)


def _round_trip(codec: AvroCodec, event: EventModel) -> EventModel:
    data = codec.encode(event.event_type, event.to_avro())
    decoded = codec.decode(data)
    latest = codec.catalogue.latest(event.event_type).version
    assert (decoded.event_type, decoded.writer_version) == (event.event_type, latest)
    return ALL_EVENTS[decoded.event_type].model_validate(decoded.payload)


def test_a_v1_restock_reads_as_one_without_a_price(codec: AvroCodec) -> None:
    # StockRestocked v2 added the price: a v1 writer's restock keeps the SKU's price.
    payload = {"restock_id": str(uuid.uuid4()), "sku": "S", "quantity": 3, "restocked_at": AT}
    decoded = codec.decode(codec.encode("StockRestocked", payload, version=1))
    assert decoded.writer_version == 1
    assert StockRestocked.model_validate(decoded.payload).unit_price_cents is None


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.event_type)
def test_sample_round_trips_through_the_codec(codec: AvroCodec, sample: EventModel) -> None:
    codec.validate(sample.event_type, sample.to_avro())
    again = _round_trip(codec, sample)
    assert again == sample
    assert again.to_avro() == sample.to_avro()


def test_models_normalise_what_the_contract_cannot_carry(codec: AvroCodec) -> None:
    paris = timezone(timedelta(hours=2))
    event = ShipmentFailed.model_validate(
        {
            "order_id": uuid.UUID(ORDER),  # what fastavro decodes a logicalType uuid to
            "customer_id": CUSTOMER,
            "reason": "r",
            "failed_at": datetime(2025, 6, 1, 12, 0, 0, 123999, tzinfo=paris),
        }
    )
    assert event.order_id == ORDER
    assert (
        ShipmentFailed(order_id=ORDER.upper(), customer_id="c", reason="r", failed_at=AT).order_id
        == ORDER
    )
    assert event.failed_at == datetime(2025, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert event.failed_at.tzinfo is UTC
    assert _round_trip(codec, event) == event


def test_models_reject_what_the_domain_forbids() -> None:
    with pytest.raises(ValidationError, match="placed_at"):
        OrderPlaced(
            order_id=ORDER,
            customer_id=CUSTOMER,
            lines=LINES,
            shipping_address=ADDRESS,
            placed_at=datetime(2025, 1, 1),  # naive: fastavro would read it as local time
        )
    with pytest.raises(ValidationError, match="order_id"):
        ShipmentFailed(order_id="not-a-uuid", customer_id=CUSTOMER, reason="r", failed_at=AT)
    with pytest.raises(ValidationError, match="lines"):
        StockReserved(
            order_id=ORDER,
            customer_id=CUSTOMER,
            lines=[],
            total_cents=0,
            shipping_address=ADDRESS,
            reserved_at=AT,
        )
    with pytest.raises(ValidationError, match="quantity"):
        OrderLine(sku="S", quantity=0, unit_price_cents=1)
    with pytest.raises(ValidationError, match="quantity"):
        StockLine(sku="S", quantity=2**31)  # does not fit an Avro int
    with pytest.raises(ValidationError, match="amount_cents"):
        FundsDeposited(deposit_id=ORDER, customer_id=CUSTOMER, amount_cents=-1, deposited_at=AT)
    with pytest.raises(ValidationError, match="country"):
        Address(name="n", line1="l", city="c", postal_code="p", country="gb")
    with pytest.raises(ValidationError, match="extra"):
        ShipmentFailed.model_validate(
            {"order_id": ORDER, "customer_id": "c", "reason": "r", "failed_at": AT, "x": 1}
        )


_offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
_aware = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.builds(timezone, _offsets),
)
_uuids: st.SearchStrategy[Any] = (
    st.uuids() | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
)
# What the models accept: no lone surrogate (UTF-8 cannot carry it), no NUL (no database can).
_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_ids = st.text(_chars, min_size=1, max_size=MAX_ID_LENGTH)
_names = st.text(_chars, min_size=1, max_size=MAX_NAME_LENGTH)


@settings(database=None)  # no example database on disk: unit tests do no I/O
@given(
    order_id=_uuids,
    customer_id=_ids,
    reason=st.text(_chars, max_size=MAX_REASON_LENGTH),
    failed_at=_aware,
)
def test_any_valid_payload_round_trips(
    codec: AvroCodec, order_id: Any, customer_id: str, reason: str, failed_at: datetime
) -> None:
    event = ShipmentFailed(
        order_id=order_id, customer_id=customer_id, reason=reason, failed_at=failed_at
    )
    assert event.order_id == str(uuid.UUID(str(order_id)))
    utc = failed_at.astimezone(UTC)
    assert event.failed_at == utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    assert _round_trip(codec, event) == event


_lines = st.lists(
    st.builds(
        OrderLine,
        sku=_ids,
        quantity=st.integers(1, MAX_QUANTITY),
        unit_price_cents=st.integers(0, MAX_UNIT_PRICE_CENTS),
    ),
    min_size=1,
    max_size=5,
)
_addresses = st.builds(
    Address,
    name=_names,
    line1=_names,
    city=_names,
    postal_code=st.text(_chars, max_size=MAX_POSTAL_CODE_LENGTH),
    country=st.from_regex(r"\A[A-Z]{2}\Z"),
)


@settings(database=None)
@given(
    event=st.builds(
        OrderPlaced,
        order_id=_uuids,
        customer_id=_ids,
        lines=_lines,
        shipping_address=_addresses,
        placed_at=_aware,
    )
)
def test_any_valid_order_round_trips(codec: AvroCodec, event: OrderPlaced) -> None:
    assert _round_trip(codec, event) == event


# --- (c) the topic catalogue -----------------------------------------------------------------


def test_every_event_type_is_on_exactly_one_topic(catalogue: Catalogue) -> None:
    listed = [et for spec in catalogue.topics.values() for et in spec.event_types]
    assert sorted(listed) == sorted(ALL_EVENTS)  # each once (duplicates would repeat)
    for event_type in ALL_EVENTS:
        topic = catalogue.topic_for(event_type)
        assert topic.split(".")[0] == catalogue.latest(event_type).context


def test_topics_keep_their_data_forever(catalogue: Catalogue) -> None:
    assert set(catalogue.topics) == {
        "orders.requests",
        "orders.events",
        "inventory.requests",
        "inventory.events",
        "payments.requests",
        "payments.events",
        "shipping.events",
        "notifications.events",
    }
    for spec in catalogue.topics.values():
        assert spec.retention_ms == -1, spec.name
        assert spec.partitions == 3, spec.name


# --- (d) a contract violation names the field ------------------------------------------------


def _placed() -> dict[str, Any]:
    return SAMPLES[0].to_avro()


_BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "top-level string": (lambda p: p.update(customer_id=42), "customer_id"),
    "top-level timestamp": (lambda p: p.update(placed_at="yesterday"), "placed_at"),
    "nested in an array": (lambda p: p["lines"][0].update(quantity="two"), "lines[0].quantity"),
    "int overflow": (lambda p: p["lines"][1].update(quantity=2**31), "lines[1].quantity"),
    "nested record": (
        lambda p: p["shipping_address"].update(country=None),
        "shipping_address.country",
    ),
    "missing top-level": (lambda p: p.pop("customer_id"), "customer_id: required field"),
    "missing nested": (lambda p: p["lines"][0].pop("sku"), "lines[0].sku: required field"),
    "unknown key": (lambda p: p.update(colour="red"), "colour: unknown field"),
    "bad uuid": (lambda p: p.update(order_id="nope"), "order_id: 'nope' is not a UUID"),
}


@pytest.mark.parametrize("case", sorted(_BREAKS))
def test_validate_names_the_offending_field(codec: AvroCodec, case: str) -> None:
    breaks, field = _BREAKS[case]
    payload = _placed()
    breaks(payload)
    with pytest.raises(ContractViolation, match=rf"^OrderPlaced: {re.escape(field)}"):
        codec.validate("OrderPlaced", payload)


def test_optional_field_accepts_null_and_string_only(codec: AvroCodec) -> None:
    payload = OrderCancelled(
        order_id=ORDER, customer_id=CUSTOMER, reason="r", cancelled_at=AT
    ).to_avro()
    codec.validate("OrderCancelled", payload)
    codec.validate("OrderCancelled", {**payload, "failed_step": "payments"})
    with pytest.raises(ContractViolation, match=re.escape("OrderCancelled: failed_step")):
        codec.validate("OrderCancelled", {**payload, "failed_step": 3})
