"""The value ranges of Avro's ``int`` and ``long`` (32- and 64-bit two's complement)."""

from __future__ import annotations

from typing import Final

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1

INT_RANGE: Final = (INT_MIN, INT_MAX)
LONG_RANGE: Final = (LONG_MIN, LONG_MAX)
