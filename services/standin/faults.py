"""The faults a stand-in is told to show, as plain state (standard library only).

``down`` (or down until a moment) refuses every request; ``failure_rate`` refuses that
fraction of them; ``latency_ms`` delays each answer after its effect is committed, so a
client with a shorter timeout sees a timeout for something that happened.

Hand-written: the issue wants each stand-in told at run time, through its own admin
endpoint; a proxy in front (Toxiproxy, say) would be one more process, and its latency is
on the connection rather than placed after this process's commit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    failure_rate: float = 0.0
    latency_ms: int = 0
    down: bool = False
    down_until: float | None = None  # monotonic time when a timed outage ends

    def set(
        self,
        now: float,
        *,
        failure_rate: float | None = None,
        latency_ms: int | None = None,
        down: bool | None = None,
        down_for_s: float | None = None,
    ) -> None:
        """Changes what is given, leaves the rest. ``down`` false also ends a timed outage."""
        if failure_rate is not None:
            self.failure_rate = failure_rate
        if latency_ms is not None:
            self.latency_ms = latency_ms
        if down is not None:
            self.down = down
            self.down_until = None
        if down_for_s is not None:
            self.down = False
            self.down_until = now + down_for_s

    def is_down(self, now: float) -> bool:
        return self.down or (self.down_until is not None and now < self.down_until)

    def down_for(self, now: float) -> float | None:
        """Seconds until a timed outage ends (None: none, or down until told otherwise)."""
        if self.down or self.down_until is None or now >= self.down_until:
            return None
        return self.down_until - now

    def refuses(self, now: float, draw: float) -> bool:
        """Whether a request is refused; ``draw`` is uniform in [0, 1)."""
        return self.is_down(now) or draw < self.failure_rate

    def view(self, now: float) -> dict[str, object]:
        remaining = self.down_for(now)
        return {
            "failure_rate": self.failure_rate,
            "latency_ms": self.latency_ms,
            "down": self.is_down(now),
            "down_for_s": None if remaining is None else round(remaining, 3),
        }
