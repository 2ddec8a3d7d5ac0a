"""The carrier's rules: how a booking changes state. Which addresses it delivers to, and
with which national carrier, are :mod:`services.addresses` (shipping without a carrier
applies the same). Pure: standard library only, no I/O.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
