"""Every payload model is bounded so that its largest instance encodes far under Kafka's
default message limit (1 MB): no input the models accept makes an event the relay cannot
publish. The largest instance is built from the models' own bounds (every string at its
maximum length in 4-byte characters, every list full, every number at its maximum), so a
new model or field without bounds fails here.
"""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel, ValidationError
from pydantic.fields import FieldInfo

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.models import EventModel
from schemas.models import (
    ALL_EVENTS,
    MAX_ID_LENGTH,
    MAX_LINES,
    MAX_MESSAGE_LENGTH,
    MAX_ORDER_TOTAL_CENTS,
    MAX_POSTAL_CODE_LENGTH,
    MAX_QUANTITY,
    MAX_REASON_LENGTH,
    MAX_UNIT_PRICE_CENTS,
    Address,
    OrderCancellationRequested,
    OrderLine,
)
from services.addresses import serviceable
from services.inventory.domain import Shortage, Shortages
from services.notifications.domain import OrderStatus, Outcome, message_for

LIMIT = 256 * 1024  # a quarter of the broker's default max.message.bytes
WIDE = "\U0001d11e"  # 4 bytes in UTF-8: the most a code point costs in an Avro string
AT = datetime(2026, 1, 1, tzinfo=UTC)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return _unwrap(inner, [*metadata, *extra])
    return annotation, metadata


def _constraint(metadata: list[Any], attr: str) -> Any:
    """The first ``attr`` (max_length, le, pattern) any constraint in the metadata sets."""
    for m in metadata:
        inner = _constraint(list(m.metadata), attr) if isinstance(m, FieldInfo) else None
        value = inner if inner is not None else getattr(m, attr, None)
        if value is not None:
            return value
    return None


def _largest(annotation: Any, metadata: list[Any], where: str) -> Any:
    """The largest value the annotation accepts; fails naming a field without bounds."""
    annotation, metadata = _unwrap(annotation, metadata)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, type(None) | int) and len(args) == 1:
        return _largest(args[0], metadata, where)  # optional: present is larger
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {
            name: _largest(info.annotation, list(info.metadata), f"{where}.{name}")
            for name, info in annotation.model_fields.items()
        }
    if typing.get_origin(annotation) is list:
        size = _constraint(metadata, "max_length")
        assert size is not None, f"{where}: list without a maximum length"
        (item,) = typing.get_args(annotation)
        return [_largest(item, [], f"{where}[]")] * size
    if annotation is str:
        if _constraint(metadata, "pattern") is not None:
            return "ZZ"  # the country code: its pattern bounds it
        if any("uuid" in getattr(getattr(m, "func", None), "__name__", "") for m in metadata):
            return str(uuid.uuid4())
        size = _constraint(metadata, "max_length")
        assert size is not None, f"{where}: string without a maximum length"
        return WIDE * size
    if annotation is int:
        high = _constraint(metadata, "le")
        assert high is not None, f"{where}: integer without a maximum"
        return high
    if annotation is bool:
        return True
    if annotation is AwareDatetime:
        return AT
    raise AssertionError(f"{where}: no largest value for {annotation}")


def largest(model: type[EventModel]) -> EventModel:
    fields: dict[str, FieldInfo] = model.model_fields
    values = {
        name: _largest(info.annotation, list(info.metadata), f"{model.__name__}.{name}")
        for name, info in fields.items()
    }
    return model.model_validate(values)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(Catalogue.load())


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_the_largest_event_of_each_type_encodes_far_under_the_broker_limit(
    codec: AvroCodec, event_type: str
) -> None:
    event = largest(ALL_EVENTS[event_type])
    encoded = codec.encode(event_type, event.to_avro())
    assert len(encoded) < LIMIT, f"{event_type}: {len(encoded)} bytes"


def test_the_largest_instance_is_really_the_largest() -> None:
    # One more code point, one more line or one more cent is refused: the bounds above are
    # the models' own, not a guess of this test.
    line = {"sku": "s", "quantity": MAX_QUANTITY, "unit_price_cents": MAX_UNIT_PRICE_CENTS}
    OrderLine.model_validate(line)
    with pytest.raises(ValidationError, match="quantity"):
        OrderLine.model_validate({**line, "quantity": MAX_QUANTITY + 1})
    with pytest.raises(ValidationError, match="unit_price_cents"):
        OrderLine.model_validate({**line, "unit_price_cents": MAX_UNIT_PRICE_CENTS + 1})
    with pytest.raises(ValidationError, match="sku"):
        OrderLine.model_validate({**line, "sku": "x" * (MAX_ID_LENGTH + 1)})
    with pytest.raises(ValidationError, match="postal_code"):
        Address(name="n", line1="l", city="c", postal_code="1" * 21, country="DE")
    assert MAX_POSTAL_CODE_LENGTH == 20


def test_an_order_total_cannot_overflow_64_bits() -> None:
    assert MAX_LINES * MAX_QUANTITY * MAX_UNIT_PRICE_CENTS <= MAX_ORDER_TOTAL_CENTS < 2**63 - 1


@pytest.mark.parametrize("bad", ["\ud800", "ok\udfffok", "\udc80"])
def test_a_lone_surrogate_is_a_validation_error_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError, match="reason") as caught:
        OrderCancellationRequested(order_id=str(uuid.uuid4()), reason=bad, requested_at=AT)
    assert "unicode" in str(caught.value).lower()
    with pytest.raises(ValidationError, match="city"):
        Address(name="n", line1="l", city=bad, postal_code="1", country="DE")


def test_a_nul_character_is_a_validation_error_naming_the_field() -> None:
    # PostgreSQL's text cannot hold NUL: such an event would fail in every consumer.
    with pytest.raises(ValidationError, match="sku") as caught:
        OrderLine(sku="a\x00b", quantity=1, unit_price_cents=1)
    assert "NUL" in str(caught.value)


def test_reasons_the_services_write_fit_the_reason_field() -> None:
    # Inventory names every short SKU; a notification quotes the reason; shipping quotes
    # the postal code (repr can quadruple a character).
    sku = WIDE * MAX_ID_LENGTH
    big = 2**31 - 1
    shortages = Shortages((), tuple(Shortage(sku, big, big) for _ in range(MAX_LINES)))
    assert len(shortages.reason) <= MAX_REASON_LENGTH
    outcome = Outcome(str(uuid.uuid4()), "c", OrderStatus.REJECTED, "x" * MAX_REASON_LENGTH)
    assert len(message_for(outcome)) <= MAX_MESSAGE_LENGTH
    refusal = serviceable("DE", "00000" + "\x00" * 15, frozenset({"DE"}))
    assert refusal is not None and len(refusal) <= MAX_REASON_LENGTH
