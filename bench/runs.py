"""The timed runs of ``python -m bench``: what each part is given (``PartRun``), a run's span
(wall and CPU), the series of a variant's runs and a part's result against its target."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.profiling import Profiler


def deadline_for(n: int) -> float:
    """A generous bound on one timed span, so a stuck run fails instead of hanging."""
    return 60.0 + n / 200.0


@dataclass(frozen=True)
class Sample:
    """Wall time and CPU seconds at one instant; take it on the event-loop thread."""

    wall: float
    loop_cpu: float  # this (the event-loop) thread
    process_cpu: float  # every thread of this process (aiosqlite's included)

    @staticmethod
    def now() -> Sample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Sample(time.perf_counter(), time.thread_time(), usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class Span:
    seconds: float
    loop_share: float  # event-loop thread CPU / wall
    threads_share: float  # other threads of this process (SQLite's) CPU / wall

    @staticmethod
    def between(start: Sample, end: Sample) -> Span:
        wall = max(end.wall - start.wall, 1e-9)
        loop = end.loop_cpu - start.loop_cpu
        others = max(0.0, end.process_cpu - start.process_cpu - loop)
        return Span(wall, loop / wall, others / wall)


@dataclass
class Series:
    """The timed runs of one variant (the same span each time)."""

    name: str
    label: str
    events: int
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def add(self, span: Span) -> None:
        self.seconds.append(span.seconds)
        self.extra.setdefault("loop thread CPU share", []).append(span.loop_share)
        self.extra.setdefault("other threads CPU share", []).append(span.threads_share)

    def median_extra(self, key: str) -> float | None:
        values = self.extra.get(key)
        return statistics.median(values) if values else None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Events per second at the median time."""
        return self.events / self.median_s

    @property
    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "events": self.events,
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median_s, 4),
            "events_per_s": round(self.rate, 1),
            "extra": {k: [round(x, 4) for x in v] for k, v in self.extra.items()},
        }


@dataclass
class Result:
    """One benchmark: the project's figure against raw aiokafka, plus explanatory variants."""

    name: str
    span: str
    target: float
    project: Series
    raw: Series
    variants: list[Series] = field(default_factory=list)
    breakdown: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)
    breakdown_total: float | None = None  # what the breakdown's percentages refer to
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.project.rate / self.raw.rate

    @property
    def paired_ratios(self) -> list[float]:
        """project/raw within each round (the two ran back to back, on the same load)."""
        return [p / r for p, r in zip(self.project.rates, self.raw.rates, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "span": self.span,
            "events": self.project.events,
            "project": self.project.to_json(),
            "raw": self.raw.to_json(),
            "ratio": round(self.ratio, 4),
            "paired_ratios": [round(x, 4) for x in self.paired_ratios],
            "target": self.target,
            "result": "PASS" if self.passed else "FAIL",
            "variants": [v.to_json() for v in self.variants],
            "breakdown_s": {what: round(s, 4) for what, s in self.breakdown},
            "notes": self.notes,
        }


@dataclass(frozen=True)
class PartRun:
    """What ``python -m bench`` hands each of its parts (relay, consumer) to run."""

    bootstrap: str
    n: int  # events per timed run
    repeat: int
    workdir: Path  # where the SQLite files go
    warmup: int
    profiler: Profiler | None = None
    progress: Callable[[str], None] = field(default=lambda _: None)


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """The variants in a different order on each repeat, so no one always runs first."""
    k %= len(items)
    return [*items[k:], *items[:k]]
