"""Where parcels go: the address rules the carrier stand-in applies, and shipping applies
itself when it runs without a carrier (the mode the carrier replaced: one set of rules, so
the two answer alike). Which countries are served, which addresses are not deliverable, the
national carrier per country, and the country list a setting names.

Pure: standard library only, no I/O (both services' domains use it).
"""

from __future__ import annotations

import re
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
_COUNTRY = re.compile(r"[A-Z]{2}")


def serviceable(country: str, postal_code: str, supported: frozenset[str]) -> str | None:
    """None when parcels are delivered to this address, else the reason they are not."""
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


def country_codes(value: str, variable: str) -> str:
    """The setting ``variable``'s comma-separated ISO 3166-1 alpha-2 codes, normalised
    (``DE,FR``); ValueError naming every code that is not one."""
    codes = [code.strip() for code in value.split(",")]
    bad = [code for code in codes if not _COUNTRY.fullmatch(code)]
    if bad:
        raise ValueError(
            f"{variable} must be comma-separated 2-letter upper-case country codes "
            f"(e.g. DE,FR); not {', '.join(repr(code) for code in bad)}"
        )
    return ",".join(codes)
