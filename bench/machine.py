"""How busy the machine was: CPU used by other processes competes with the benchmark.

On a 2-core machine the broker, the benchmark's event loop and its SQLite thread already share
the cores; anything else running (a test suite, another broker) makes the figures noisy. The
CPU used by others is the machine's busy time (bench.cpu) minus this process and its broker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench.cpu import machine_busy_s, process_s, self_s


def _machine_busy_s() -> float | None:
    try:
        return machine_busy_s()
    except (OSError, IndexError):
        return None


def _process_s(pid: int | None) -> float:
    return 0.0 if pid is None else (process_s(pid) or 0.0)


@dataclass
class CpuUse:
    cores: int
    wall_s: float
    bench_cores: float  # average cores used by this process
    broker_cores: float | None  # by the private broker (None: external broker)
    other_cores: float | None  # by everything else (None: unknown)

    @property
    def noisy(self) -> bool:
        # With an external broker its CPU is counted among the others: no verdict then.
        known = self.broker_cores is not None and self.other_cores is not None
        return known and (self.other_cores or 0.0) > 0.25

    def describe(self) -> str:
        parts = [f"{self.cores} cores", f"benchmark process {self.bench_cores:.2f} cores"]
        if self.broker_cores is not None:
            parts.append(f"broker {self.broker_cores:.2f}")
        if self.other_cores is not None:
            external = " (the external broker included)" if self.broker_cores is None else ""
            parts.append(f"other processes{external} {self.other_cores:.2f}")
        text = "CPU use on average over the run: " + ", ".join(parts)
        if self.noisy:
            text += " -- WARNING: other processes competed for the CPU, figures are noisy"
        return text

    def to_json(self) -> dict[str, float | int | bool | None]:
        return {
            "cores": self.cores,
            "wall_s": round(self.wall_s, 1),
            "bench_cores": round(self.bench_cores, 2),
            "broker_cores": None if self.broker_cores is None else round(self.broker_cores, 2),
            "other_cores": None if self.other_cores is None else round(self.other_cores, 2),
            "noisy": self.noisy,
        }


class CpuWatch:
    """Started once the broker runs; ``stop()`` gives the average use since."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.started = time.perf_counter()
        self.machine = _machine_busy_s()
        self.own = self_s()
        self.broker = _process_s(broker_pid)

    def stop(self) -> CpuUse:
        wall = max(time.perf_counter() - self.started, 1e-9)
        machine = _machine_busy_s()
        own = self_s() - self.own
        broker = _process_s(self.broker_pid) - self.broker if self.broker_pid else None
        other = None
        if machine is not None and self.machine is not None:
            other = max(0.0, (machine - self.machine) - own - (broker or 0.0))
        return CpuUse(
            cores=os.cpu_count() or 1,
            wall_s=wall,
            bench_cores=own / wall,
            broker_cores=None if broker is None else broker / wall,
            other_cores=None if other is None else other / wall,
        )
