"""Partitions a consumer holds back while a dependency its handler calls is unavailable.

A handler raising ``DependencyUnavailable`` (events.dependency: a breaker open, or an
outage that outlasted the retries) says nothing about the event: the consumer rolls the
transaction back, seeks the event's partition back to it and pauses the partition until
``retry_after_s`` has passed; the redelivered event is then the breaker's half-open probe.
Nothing is dead-lettered and no retry is counted for it, and other partitions go on.

This module holds the error and the bookkeeping (which partition is held from which
offset, and until when), without I/O; events.consumer does the seeking, pausing and
committing. A rebalance gives aiokafka fresh, unpaused partitions, so the consumer forgets
all of it then (``clear``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class DependencyUnavailable(Exception):
    """Breaker open, or transient failures outlasted the attempts: not the event's fault."""

    def __init__(self, dependency: str, retry_after_s: float, reason: str) -> None:
        super().__init__(f"{dependency} unavailable ({reason}); retry in {retry_after_s:.2f}s")
        self.dependency = dependency
        self.retry_after_s = retry_after_s
        self.reason = reason


class Unavailable(Exception):
    """``DependencyUnavailable`` raised while applying ``record`` (within a batch): the
    record names the partition to pause and the offset to pause it at."""

    def __init__(self, record: Any, error: DependencyUnavailable) -> None:
        super().__init__(str(error))
        self.record = record
        self.error = error


def unavailable_in(exc: BaseException) -> DependencyUnavailable | None:
    """The ``DependencyUnavailable`` that ``exc`` is or wraps (``Unavailable``, or the
    ``error`` of a wrapper such as a parked event's failure), else None."""
    if isinstance(exc, DependencyUnavailable):
        return exc
    if isinstance(exc, Unavailable):
        return exc.error
    inner = getattr(exc, "error", None)
    return inner if isinstance(inner, DependencyUnavailable) else None


@dataclass
class Held:
    offset: int  # the first record not applied: fetched again from here
    resume_at: float  # loop time


@dataclass
class PausedPartitions(Generic[P]):
    """Partitions held back, each from an offset until a time (the event loop's clock)."""

    held: dict[P, Held] = field(default_factory=dict)

    def hold(self, partition: P, offset: int, until: float) -> int:
        """Holds ``partition`` from ``offset`` (the lowest offset held so far wins, so a
        record below one already held is fetched again too) until ``until`` (the latest
        wins). Returns the offset the partition is held from."""
        current = self.held.get(partition)
        if current is not None:
            offset = min(offset, current.offset)
            until = max(until, current.resume_at)
        self.held[partition] = Held(offset, until)
        return offset

    def holds(self, partition: P, offset: int) -> bool:
        """The record at ``offset`` is held back: not to be applied now."""
        current = self.held.get(partition)
        return current is not None and offset >= current.offset

    def offset(self, partition: P) -> int | None:
        current = self.held.get(partition)
        return None if current is None else current.offset

    def due(self, now: float) -> list[P]:
        """The partitions whose time has come, no longer held."""
        ready = [p for p, h in self.held.items() if h.resume_at <= now]
        for partition in ready:
            del self.held[partition]
        return ready

    def release(self, partition: P) -> None:
        self.held.pop(partition, None)

    def next_due(self) -> float | None:
        return min((h.resume_at for h in self.held.values()), default=None)

    def clear(self) -> None:
        self.held.clear()

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, partition: object) -> bool:
        return partition in self.held
