"""How busy the machine was: CPU used by other processes competes with the benchmark.

On a 2-core machine the broker, the benchmark's event loop and its SQLite thread already share
the cores; anything else running (a test suite, another broker) makes the figures noisy. The
CPU used by others is the machine's busy time (/proc/stat) minus this process and its broker.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy / _TICKS


def _self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


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
        self.own = _self_s()
        self.broker = _process_s(broker_pid)

    def stop(self) -> CpuUse:
        wall = max(time.perf_counter() - self.started, 1e-9)
        machine = _machine_busy_s()
        own = _self_s() - self.own
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
