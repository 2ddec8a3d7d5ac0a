"""Typed payloads of the reference order saga, one pydantic model per Avro contract.

Each model mirrors the latest ``schemas/<context>/<EventName>/vN.avsc`` field for field (checked by
``tests/unit/test_contracts.py``). The models accept what the codec decodes and produce what
it encodes:

* uuid ids are ``str`` in canonical form; a ``uuid.UUID`` (what fastavro decodes a
  ``logicalType: uuid`` to) or any spelling ``uuid.UUID`` accepts is normalised to it;
* timestamps must be timezone-aware (fastavro would read a naive datetime as *local* time)
  and are normalised to UTC at millisecond precision, which is all ``timestamp-millis``
  carries, so ``Model.model_validate(decode(encode(m.to_avro())))`` equals ``m``;
* ``int`` fields are bounded to Avro ``int`` (32-bit) or ``long`` (64-bit), and money and
  quantities further (``MAX_*``): an order's total can never overflow a 64-bit integer;
* every string and list has a maximum length and strings must be valid Unicode (no lone
  surrogates, which UTF-8 cannot carry), so that every event a saga emits stays far under
  Kafka's default message limit (``tests/unit/test_payload_bounds.py`` encodes the largest
  instance of each model) and a bad value is a validation error naming its field, never a
  failure later in encoding, the database or the relay.

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

from events.avro.bounds import INT_MAX, LONG_MAX
from events.models import EventModel

FAILED_STEPS: Final = ("inventory", "payments", "shipping")
SAGA_STEPS: Final = FAILED_STEPS  # what a pending order can wait on (OrderStuck.waiting_on)
ORDER_STATUSES: Final = ("COMPLETED", "REJECTED", "CANCELLED")

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Input bounds. Lengths count code points (up to 4 bytes each in UTF-8); the largest event
# (StockRejected of MAX_LINES shortages, its reason naming each) encodes to about 150 KB.
MAX_LINES: Final = 100
"""Lines of one order (and so shortages and reserved lines)."""
MAX_ID_LENGTH: Final = 128
"""Customer ids, SKUs, payment and shipment ids, carriers (columns hold 255)."""
MAX_NAME_LENGTH: Final = 200
"""An address's name, line1 and city."""
MAX_POSTAL_CODE_LENGTH: Final = 20
MAX_REASON_LENGTH: Final = 20_000
"""Room for inventory's reason naming every short SKU of a MAX_LINES order (~17,600)."""
MAX_MESSAGE_LENGTH: Final = MAX_REASON_LENGTH + 1_000
"""A customer notification: a sentence around the reason."""
MAX_CODE_LENGTH: Final = 32
"""failed_step, waiting_on, order_status: short words from a vocabulary."""
MAX_QUANTITY: Final = 1_000_000
"""One order line's or one restock's quantity."""
MAX_UNIT_PRICE_CENTS: Final = 10**10
MAX_ORDER_TOTAL_CENTS: Final = MAX_LINES * MAX_QUANTITY * MAX_UNIT_PRICE_CENTS
"""10^18 < 2^63 - 1: sum(quantity * unit price) over an order cannot overflow 64 bits."""
MAX_DEPOSIT_CENTS: Final = 10**15
"""One deposit; a balance is a sum of many, so balances stay plain 64-bit Cents."""


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


def _storable(value: str) -> str:
    if "\x00" in value:
        # PostgreSQL's text cannot hold NUL: the event would fail in every consumer.
        raise ValueError("string contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON lets "\ud800" through): Avro strings are UTF-8.
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return value


ValidUnicode = AfterValidator(_storable)
"""For a ``str`` that UTF-8 can encode and a database can store (no NUL): add it to every
string taken from outside."""


Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH), ValidUnicode]
"""A plain string id (customer, SKU, payment, shipment): non-empty, at most 128 code points."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), ValidUnicode]
PostalCode = Annotated[str, StringConstraints(max_length=MAX_POSTAL_CODE_LENGTH), ValidUnicode]
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_LENGTH), ValidUnicode]
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_LENGTH), ValidUnicode]
Code = Annotated[str, StringConstraints(max_length=MAX_CODE_LENGTH), ValidUnicode]
"""A word from a vocabulary kept open in the contracts (failed_step, waiting_on, ...)."""

Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
RequestedQuantity = Annotated[int, Field(ge=1, le=MAX_LINES * MAX_QUANTITY)]
"""Per SKU over an order's lines (an order may name a SKU twice)."""
Count = Annotated[int, Field(ge=0, le=INT_MAX)]
Cents = Annotated[int, Field(ge=0, le=LONG_MAX)]
"""Money in minor currency units, never negative (balances: sums of many amounts)."""
UnitPrice = Annotated[int, Field(ge=0, le=MAX_UNIT_PRICE_CENTS)]
Amount = Annotated[int, Field(ge=0, le=MAX_ORDER_TOTAL_CENTS)]
"""An order's total, or a payment of it."""
Deposit = Annotated[int, Field(ge=0, le=MAX_DEPOSIT_CENTS)]

CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2, upper case."""


class Record(BaseModel):
    """Base of the nested records: immutable and closed, like the events."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- nested records ------------------------------------------------------------------------


class Address(Record):
    """``Address`` in every namespace (choreo.orders, .inventory, .payments, .shipping)."""

    name: Name
    line1: Name
    city: Name
    postal_code: PostalCode
    country: CountryCode


class OrderLine(Record):
    sku: Id
    quantity: Quantity
    unit_price_cents: UnitPrice


class StockLine(Record):
    sku: Id
    quantity: Quantity


class Shortage(Record):
    sku: Id
    requested: RequestedQuantity
    available: Count


# --- orders --------------------------------------------------------------------------------


class OrderPlaced(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_LINES)]
    shipping_address: Address
    placed_at: Timestamp


class OrderCreated(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=MAX_LINES)]
    total_cents: Amount
    shipping_address: Address
    created_at: Timestamp


class OrderCancellationRequested(EventModel):
    order_id: Uuid
    reason: Reason
    requested_at: Timestamp


class OrderCompleted(EventModel):
    order_id: Uuid
    customer_id: Id
    total_cents: Amount
    shipment_id: Id
    completed_at: Timestamp


class OrderRejected(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: Reason
    failed_step: Code
    rejected_at: Timestamp


class OrderCancelled(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: Reason
    failed_step: Code | None = None
    cancelled_at: Timestamp


class OrderStuck(EventModel):
    order_id: Uuid
    customer_id: Id
    waiting_on: Code  # one of SAGA_STEPS
    waiting_since: Timestamp
    deadline_at: Timestamp
    detected_at: Timestamp


# --- inventory -----------------------------------------------------------------------------


class StockRestocked(EventModel):
    """v2: an optional unit price, set with the stock (None keeps the SKU's price)."""

    restock_id: Uuid
    sku: Id
    quantity: Quantity
    restocked_at: Timestamp
    unit_price_cents: UnitPrice | None = None


class StockReserved(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES)]
    total_cents: Amount
    shipping_address: Address
    reserved_at: Timestamp


class StockRejected(EventModel):
    order_id: Uuid
    customer_id: Id
    reason: Reason
    shortages: Annotated[list[Shortage], Field(max_length=MAX_LINES)]
    rejected_at: Timestamp


class StockReleased(EventModel):
    order_id: Uuid
    customer_id: Id
    lines: Annotated[list[StockLine], Field(min_length=1, max_length=MAX_LINES)]
    reason: Reason
    failed_step: Code | None = None
    released_at: Timestamp


class StockReceived(EventModel):
    """Inventory's fact: a restock it counted (read models project this, not the request)."""

    restock_id: Uuid
    sku: Id
    quantity: Quantity
    restocked_at: Timestamp
    received_at: Timestamp


class SkuPriced(EventModel):
    """Inventory's fact: the SKU's unit price from now on (orders prices orders from it)."""

    sku: Id
    unit_price_cents: UnitPrice
    restock_id: Uuid
    priced_at: Timestamp


# --- payments ------------------------------------------------------------------------------


class FundsDeposited(EventModel):
    deposit_id: Uuid
    customer_id: Id
    amount_cents: Deposit
    deposited_at: Timestamp


class PaymentCaptured(EventModel):
    order_id: Uuid
    customer_id: Id
    payment_id: Id
    amount_cents: Amount
    shipping_address: Address
    captured_at: Timestamp


class PaymentDeclined(EventModel):
    order_id: Uuid
    customer_id: Id
    amount_cents: Amount
    reason: Reason
    balance_cents: Cents
    declined_at: Timestamp


class PaymentRefunded(EventModel):
    order_id: Uuid
    customer_id: Id
    payment_id: Id
    amount_cents: Amount
    reason: Reason
    failed_step: Code | None = None
    refunded_at: Timestamp


class FundsCredited(EventModel):
    """Payments' fact: a deposit it credited (read models project this, not the request)."""

    deposit_id: Uuid
    customer_id: Id
    amount_cents: Deposit
    deposited_at: Timestamp
    credited_at: Timestamp


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
    reason: Reason
    failed_at: Timestamp


class ShipmentCancelled(EventModel):
    order_id: Uuid
    shipment_id: Id
    reason: Reason
    cancelled_at: Timestamp


# --- notifications -------------------------------------------------------------------------


class CustomerNotified(EventModel):
    notification_id: Uuid
    order_id: Uuid
    customer_id: Id
    order_status: Code
    message: Message
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
        StockReceived,
        SkuPriced,
        FundsDeposited,
        PaymentCaptured,
        PaymentDeclined,
        PaymentRefunded,
        FundsCredited,
        ShipmentScheduled,
        ShipmentFailed,
        ShipmentCancelled,
        CustomerNotified,
    )
}
