"""``choreo replay``'s progress: the replay's reports (one per fetched chunk) drawn by the
command line's one renderer, a meter per phase, no more often than the meter's interval."""

from __future__ import annotations

import pytest

from events.replay import Progress
from services.tools.replay import PhaseMeters


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_are_drawn_per_phase_at_most_every_interval_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    meters = PhaseMeters("query", clock=clock)
    for events in range(1_000, 10_001, 1_000):  # ten chunks within a second: nothing drawn
        clock.now += 0.1
        meters(Progress("rebuild", events, 10_000, 10_000.0, 0.0))
    assert capsys.readouterr().err == ""
    clock.now += 2.0
    meters(Progress("rebuild", 10_000, 10_000, 5_000.0, 0.0))
    clock.now += 0.5
    meters(Progress("catch-up", 10_100, 10_100, 5_000.0, 0.0))  # a new phase: a new meter
    clock.now += 2.5
    meters(Progress("catch-up", 10_100, 10_100, 4_000.0, 0.0))
    meters.finish()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "query rebuild" in lines[0] and "10,000 events" in lines[0]
    assert "query catch-up" in lines[1] and "events/s" in lines[1]
