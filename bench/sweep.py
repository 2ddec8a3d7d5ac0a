"""The offered-load sweep's rules: when a step passes, and which rate to offer next.

A step offers a steady rate for a fixed time. It passes when the completions keep up (the
step's orders all complete at a rate within ``KEEP_UP`` of the rate actually offered) and
the p99 latency is at most ``P99_MS``. The sustained capacity is the highest offered rate
that passed below the lowest one that failed: the sweep climbs a ladder of rates until a
step fails, then bisects between the last pass and the first fail a bounded number of
times. Pure functions, so the search is tested without a stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KEEP_UP = 0.02  # completions may trail the offered rate by at most 2%
P99_MS = 250.0
LADDER: tuple[float, ...] = (10, 50, 100, 200, 300, 500, 700, 1000, 1400, 2000, 3000)
REPORTED: tuple[float, ...] = (10, 50, 100, 200)  # always measured, for the report
BACKLOG_S = 2.0
"""A step stops early once this many seconds of orders are waiting: by then more than 1%
of a 30 s step has waited over 250 ms, so it has failed, and a longer backlog only delays
the next step (which must start on a drained stack)."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    why: str


def judge(
    rate: float, offered_per_s: float, completed_per_s: float, p99_ms: float, aborted: bool
) -> Verdict:
    """``rate`` is the nominal rate, ``offered_per_s`` what the benchmark managed to offer."""
    if aborted:
        return Verdict(False, f"fell behind by over {BACKLOG_S:g}s of orders; stopped early")
    if offered_per_s < (1 - KEEP_UP) * rate:  # not a pass the stack earned
        return Verdict(False, f"the benchmark offered only {offered_per_s:g}/s")
    if completed_per_s < (1 - KEEP_UP) * offered_per_s:
        return Verdict(False, f"completed {completed_per_s:g}/s of {offered_per_s:g}/s offered")
    if p99_ms > P99_MS:
        return Verdict(False, f"p99 {p99_ms:.0f} ms > {P99_MS:.0f} ms")
    return Verdict(True, "kept up")


def backlog_limit(rate: float) -> int:
    """Orders waiting at which a step is stopped (at least 20: a slow start is not a fail)."""
    return max(20, int(rate * BACKLOG_S))


def _round_rate(rate: float) -> float:
    step = 10 if rate >= 100 else 5 if rate >= 20 else 1
    return float(max(step, round(rate / step) * step))


def next_rate(
    outcomes: Mapping[float, bool], ladder: Sequence[float] = LADDER, bisections: int = 2
) -> float | None:
    """The next rate to offer given the passes and fails so far; None when done."""
    pending = [r for r in REPORTED if r in ladder and r not in outcomes]
    if pending:
        return pending[0]
    failed = [r for r, ok in outcomes.items() if not ok]
    first_fail = min(failed) if failed else None
    last_pass = capacity(outcomes)
    if first_fail is None:
        higher = [r for r in ladder if r > last_pass and r not in outcomes]
        return higher[0] if higher else None
    done = sum(1 for r in outcomes if r not in ladder)
    if done >= bisections:
        return None
    mid = _round_rate((last_pass + first_fail) / 2)
    if mid <= last_pass or mid >= first_fail or mid in outcomes:
        return None
    return mid


def capacity(outcomes: Mapping[float, bool]) -> float:
    """The highest passing rate below the lowest failing one (0 when none passed)."""
    failed = [r for r, ok in outcomes.items() if not ok]
    first_fail = min(failed) if failed else float("inf")
    return max((r for r, ok in outcomes.items() if ok and r < first_fail), default=0.0)
