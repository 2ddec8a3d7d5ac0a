"""Typed payloads of the reference order saga, one pydantic model per Avro contract.

Each model mirrors ``schemas/<context>/<EventName>/v1.avsc`` field for field (checked by
``tests/unit/test_contracts.py``). The models accept what the codec decodes and produce what
it encodes:

* uuid ids are ``str`` in canonical form; a ``uuid.UUID`` (what fastavro decodes a
  ``logicalType: uuid`` to) or any spelling ``uuid.UUID`` accepts is normalised to it;
* timestamps must be timezone-aware (fastavro would read a naive datetime as *local* time)
  and are normalised to UTC at millisecond precision, which is all ``timestamp-millis``
  carries, so ``Model.model_validate(decode(encode(m.to_avro())))`` equals ``m``;
* ``int`` fields are bounded to Avro ``int`` (32-bit) or ``long`` (64-bit).

Values with a fixed vocabulary (``failed_step``, ``order_status``, ``waiting_on``) are plain
strings in the contracts and here, so that adding a value later does not break readers; the
known values are ``FAILED_STEPS``, ``ORDER_STATUSES`` and ``SAGA_STEPS``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from events.models import EventModel

FAILED_STEPS: Final = ("inventory", "payments", "shipping")
SAGA_STEPS: Final = FAILED_STEPS  # what a pending order can wait on (OrderStuck.waiting_on)
ORDER_STATUSES: Final = ("COMPLETED", "REJECTED", "CANCELLED")

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


def _canonical_uuid(value: object) -> object:
    if isinstance(value, str):
        if _CANONICAL_UUID.fullmatch(value):  # the common case, without building a UUID
            return value
        return str(uuid.UUID(value))  # ValueError -> pydantic names the field
    if isinstance(value, uuid.UUID):
        return str(value)  # ValueError -> pydantic names the field
    return value  # let pydantic reject other types with its usual message


def _utc_millis(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


Uuid = Annotated[str, BeforeValidator(_canonical_uuid)]
"""An Avro ``{"type": "string", "logicalType": "uuid"}``, held as a canonical string."""

Timestamp = Annotated[AwareDatetime, AfterValidator(_utc_millis)]
"""An Avro ``timestamp-millis``: timezone-aware, normalised to UTC and whole milliseconds."""

Id = Annotated[str, StringConstraints(min_length=1)]
"""A plain string id (customer, SKU, payment, shipment): any non-empty string."""

Quantity = Annotated[int, Field(ge=1, le=_INT_MAX)]
Count = Annotated[int, Field(ge=0, le=_INT_MAX)]
Cents = Annotated[int, Field(ge=0, le=_LONG_MAX)]
"""Money in minor currency units, never negative."""

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2, upper case."""


class Record(BaseModel):
    """Base of the nested records: immutable and closed, like the events."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- nested records ------------------------------------------------------------------------


class Address(Record):
    """``Address`` in every namespace (choreo.orders, .inventory, .payments, .shipping)."""

    name: Id
    line1: Id
    city: Id
    postal_code: str
    country: CountryCode


class OrderLine(Record):
    sku: Id
    quantity: Quantity
    unit_price_cents: Cents


class StockLine(Record):
    sku: Id
    quantity: Quantity


class Shortage(Record):
    sku: Id
    requested: Quantity
    available: Count


# --- orders --------------------------------------------------------------------------------


class OrderPlaced(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1)]
    shipping_address: Address
    placed_at: Timestamp


class OrderCreated(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1)]
    total_cents: Cents
    shipping_address: Address
    created_at: Timestamp


class OrderCancellationRequested(EventModel):
    order_id: Uuid
    reason: str
    requested_at: Timestamp


class OrderCompleted(EventModel):
    order_id: Uuid
    customer_id: Id
    total_cents: Cents
    shipment_id: Id
    completed_at: Timestamp


class OrderRejected(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: str
    failed_step: str
    rejected_at: Timestamp


class OrderCancelled(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: str
    failed_step: str | None = None
    cancelled_at: Timestamp


class OrderStuck(EventModel):
    order_id: Uuid
    customer_id: Id
    waiting_on: str  # one of SAGA_STEPS
    waiting_since: Timestamp
    deadline_at: Timestamp
    detected_at: Timestamp


# --- inventory -----------------------------------------------------------------------------


class StockRestocked(EventModel):
    restock_id: Uuid
    sku: Id
    quantity: Quantity
    restocked_at: Timestamp


class StockReserved(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[StockLine], Field(min_length=1)]
    total_cents: Cents
    shipping_address: Address
    reserved_at: Timestamp


class StockRejected(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: str
    shortages: list[Shortage]
    rejected_at: Timestamp


class StockReleased(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[StockLine], Field(min_length=1)]
    reason: str
    failed_step: str | None = None
    released_at: Timestamp


# --- payments ------------------------------------------------------------------------------


class FundsDeposited(EventModel):
    deposit_id: Uuid
    customer_id: Id
    amount_cents: Cents
    deposited_at: Timestamp


class PaymentCaptured(EventModel):
    order_id: Uuid
    customer_id: Id
    payment_id: Id
    amount_cents: Cents
    shipping_address: Address
    captured_at: Timestamp


class PaymentDeclined(EventModel):
    order_id: Uuid
    customer_id: Id
    amount_cents: Cents
    reason: str
    balance_cents: Cents
    declined_at: Timestamp


class PaymentRefunded(EventModel):
    order_id: Uuid
    customer_id: Id
    payment_id: Id
    amount_cents: Cents
    reason: str
    failed_step: str | None = None
    refunded_at: Timestamp


# --- shipping ------------------------------------------------------------------------------


class ShipmentScheduled(EventModel):
    order_id: Uuid
    customer_id: Id
    shipment_id: Id
    carrier: Id
    shipping_address: Address
    scheduled_at: Timestamp


class ShipmentFailed(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: str
    failed_at: Timestamp


class ShipmentCancelled(EventModel):
    order_id: Uuid
    shipment_id: Id
    reason: str
    cancelled_at: Timestamp


# --- notifications -------------------------------------------------------------------------


class CustomerNotified(EventModel):
    notification_id: Uuid
    order_id: Uuid
    customer_id: Id
    order_status: str
    message: str
    notified_at: Timestamp


ALL_EVENTS: dict[str, type[EventModel]] = {
    model.event_type: model
    for model in (
        OrderPlaced,
        OrderCreated,
        OrderCancellationRequested,
        OrderCompleted,
        OrderRejected,
        OrderCancelled,
        OrderStuck,
        StockRestocked,
        StockReserved,
        StockRejected,
        StockReleased,
        FundsDeposited,
        PaymentCaptured,
        PaymentDeclined,
        PaymentRefunded,
        ShipmentScheduled,
        ShipmentFailed,
        ShipmentCancelled,
        CustomerNotified,
    )
}
