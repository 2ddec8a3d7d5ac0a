"""The carrier's rules: which addresses it delivers to, with which national carrier, and
how a booking changes state. Pure: standard library only, no I/O.

The address rules moved here from shipping (it used to decide locally): an undeliverable
address is now the carrier's definite answer.
"""

from __future__ import annotations

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
# Countries added to the served set without a national carrier go with the international one.
DEFAULT_CARRIER: Final = "dhl-express"
DEFAULT_COUNTRIES: Final = "DE,FR,NL,BE,GB,US"


class Status(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


def serviceable(country: str, postal_code: str, supported: frozenset[str]) -> str | None:
    """None when the carrier delivers to this address, else the reason it does not."""
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
