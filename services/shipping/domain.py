"""Shipping's business rules: where we deliver, with whom, and how a shipment changes state.

Pure: standard library only, no I/O. Ids and clocks come in from the caller.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

UNSERVICEABLE: Final = "address not serviceable"
# A postal code of zeros is the placeholder that shops put in when the customer left it
# blank; no carrier accepts it.
PLACEHOLDER_POSTAL_CODE: Final = "00000"

CARRIERS: Final[dict[str, str]] = {
    "BE": "bpost",
    "DE": "dhl",
    "FR": "colissimo",
    "GB": "royal-mail",
    "NL": "postnl",
    "US": "ups",
}
# Countries added to the supported set without a national carrier go with the
# international one.
DEFAULT_CARRIER: Final = "dhl-express"


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


def serviceable(country: str, postal_code: str, supported: frozenset[str]) -> str | None:
    """None when we deliver to this address, else the reason we do not."""
    # Codes are upper case on the wire; accept any case so a caller's spelling cannot
    # turn a served country into a refusal.
    code = country.strip().upper()
    if code not in supported:
        return f"{UNSERVICEABLE}: country {code or '(none)'} is not served"
    if postal_code.strip().startswith(PLACEHOLDER_POSTAL_CODE):
        return f"{UNSERVICEABLE}: postal code {postal_code.strip()!r} is not deliverable"
    return None


def carrier_for(country: str) -> str:
    return CARRIERS.get(country.strip().upper(), DEFAULT_CARRIER)


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


def on_order_cancelled(current: Shipment | None, *, order_id: str, reason: str) -> Shipment | None:
    """The state after an order is cancelled; None when nothing changes (and nothing is said)."""
    if current is None:
        return Shipment(order_id, Status.TOMBSTONE, reason=reason)
    if current.status is Status.SCHEDULED:
        return dataclasses.replace(current, status=Status.CANCELLED, reason=reason)
    # FAILED never shipped, CANCELLED and TOMBSTONE already are: cancelling again is a no-op.
    return None
