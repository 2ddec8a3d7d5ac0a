"""Shipping's business rules: where we deliver, with whom, and how a shipment changes state.

With a carrier (``CARRIER_URL``) the carrier decides where it delivers and who carries (its
booking or its 422); the carrier's own address rules (:mod:`services.addresses`:
``serviceable``, ``carrier_for``) decide here only for a deployment without one.

Pure: standard library only, no I/O. Ids and clocks come in from the caller.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from services.addresses import carrier_for, serviceable

# Fixed for good: every key ever sent to the carrier derives from it, so a redelivered event
# after an upgrade still re-sends the key of its first call.
IDEMPOTENCY_NAMESPACE: Final = uuid.UUID("0b6f4f1e-3c2d-4e8a-9a57-2d1c7e5b8f30")


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # The order was cancelled before any payment reached shipping: a later capture ships
    # nothing. Not a shipment, only a marker that stops one.
    TOMBSTONE = "TOMBSTONE"


@dataclass(frozen=True, slots=True)
class Shipment:
    order_id: str
    status: Status
    shipment_id: str | None = None
    carrier: str | None = None
    reason: str | None = None


def on_payment_captured(
    current: Shipment | None,
    *,
    order_id: str,
    country: str,
    postal_code: str,
    supported: frozenset[str],
    shipment_id: str,
) -> Shipment | None:
    """The shipment to record for a captured payment; None when there is nothing to do."""
    if current is not None:
        # Tombstoned (cancelled first) or already decided: never a second shipment.
        return None
    reason = serviceable(country, postal_code, supported)
    if reason is not None:
        return Shipment(order_id, Status.FAILED, shipment_id, reason=reason)
    return Shipment(order_id, Status.SCHEDULED, shipment_id, carrier_for(country))


def booked(
    current: Shipment | None, *, order_id: str, booking_id: str, carrier: str
) -> Shipment | None:
    """The shipment the carrier booked (its booking id is the shipment's); None when the
    order already has a row."""
    if current is not None:
        return None
    return Shipment(order_id, Status.SCHEDULED, booking_id, carrier)


def undeliverable(
    current: Shipment | None, *, order_id: str, shipment_id: str, reason: str
) -> Shipment | None:
    """The FAILED shipment the carrier refused, with its reason; None when the order already
    has a row."""
    if current is not None:
        return None
    return Shipment(order_id, Status.FAILED, shipment_id, reason=reason)


def idempotency_key(operation: str, order_id: str) -> str:
    """The carrier's idempotency key for ``operation`` (book, cancel) on an order: a function
    of what must happen once, so a retry or a redelivered event sends the same key and the
    carrier books (or cancels) once."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"shipping:{operation}:{order_id}"))


def on_order_cancelled(current: Shipment | None, *, order_id: str, reason: str) -> Shipment | None:
    """The state after an order is cancelled; None when nothing changes (and nothing is said)."""
    if current is None:
        return Shipment(order_id, Status.TOMBSTONE, reason=reason)
    if current.status is Status.SCHEDULED:
        return dataclasses.replace(current, status=Status.CANCELLED, reason=reason)
    # FAILED never shipped, CANCELLED and TOMBSTONE already are: cancelling again is a no-op.
    return None
