"""Saga durations per window, kept compact: a log-linear histogram with percentiles on read.

Pure: standard library only. A duration (milliseconds) is kept to two significant decimal
digits (below 100 ms, to the millisecond), so a bucket is at most 5% wide and a window
holds at most 90 buckets per decade of durations however many sagas end in it.
Percentiles are nearest-rank over the buckets: the value reported is a bucket's value,
within 5% of a duration that was observed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SIGNIFICANT_DIGITS = 2
PERCENTILES = (50, 90, 99)


def bucket_of(duration_ms: float) -> int:
    """The bucket a duration is counted in: the duration to two significant digits."""
    value = max(0, round(duration_ms))
    scale = int(10 ** max(0, len(str(value)) - SIGNIFICANT_DIGITS))
    return (value + scale // 2) // scale * scale  # half up: 105 -> 110, 1050 -> 1100


@dataclass
class DurationHistogram:
    counts: dict[int, int] = field(default_factory=dict)  # bucket value (ms) -> count

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, duration_ms: float, times: int = 1) -> None:
        b = bucket_of(duration_ms)
        self.counts[b] = self.counts.get(b, 0) + times

    def merge(self, other: DurationHistogram) -> None:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n

    def percentile(self, q: float) -> float | None:
        """Nearest rank: the smallest bucket with at least q% of the durations at or below."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return float(b)
        raise AssertionError("unreachable: ranks never exceed the total")

    def summary(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"count": self.count}
        for q in PERCENTILES:
            out[f"p{q}"] = self.percentile(q)
        return out

    def to_json(self) -> dict[str, int]:
        return {str(b): n for b, n in sorted(self.counts.items())}

    @classmethod
    def from_json(cls, doc: Mapping[str, int]) -> DurationHistogram:
        return cls({int(b): int(n) for b, n in doc.items()})

    @classmethod
    def of(cls, durations_ms: Iterable[float]) -> DurationHistogram:
        h = cls()
        for d in durations_ms:
            h.add(d)
        return h
