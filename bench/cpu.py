"""CPU time from Linux's ``/proc``: a process, its main thread, a server with its children,
this process and the machine; and the saga benchmark's probe built on them.

The one place in bench/ that reads ``/proc``. It stays hand-written because psutil, which reads
the same files, is not a dependency of the project (adding one is the lead's call, and a
benchmark needs no more than proc(5)'s documented fields: utime and stime, cutime and cstime of
``/proc/<pid>/stat``, the first line of ``/proc/stat``).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str | Path) -> list[str] | None:
    """The fields after the command name (which may hold spaces and parentheses)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None  # the process is gone
    return text.rsplit(")", 1)[1].split()


def _utime_stime_s(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None when it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return None if fields is None else _utime_stime_s(fields)


def main_thread_s(pid: int) -> float | None:
    """The same for the process's main thread only (a service's event loop)."""
    fields = _stat_fields(f"/proc/{pid}/task/{pid}/stat")
    return None if fields is None else _utime_stime_s(fields)


def tree_s(pid: int) -> float | None:
    """A server and its children (PostgreSQL's backends): its own time, its reaped
    children's (cutime + cstime: closed connections) and its live children's."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return None
    total = sum(int(f) for f in fields[11:15]) / TICKS
    for stat in Path("/proc").glob("[0-9]*/stat"):
        child = _stat_fields(stat)
        if child is not None and int(child[1]) == pid:  # None: exited since the listing
            total += _utime_stime_s(child)
    return total


def machine_busy_s() -> float:
    """The machine's busy time since boot, every core (raises OSError without /proc)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    values = [int(v) for v in fields]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / TICKS


def self_s() -> float:
    """This process, every thread included (also threads that ended meanwhile)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- the saga's probe


@dataclass
class CpuSample:
    wall: float
    machine: float
    procs: dict[str, tuple[float, float | None]]  # name -> (all threads, main thread)


class CpuProbe:
    """Samples the named processes' CPU time (and this process's, and the machine's).

    For Python processes the main thread (the asyncio loop) is sampled apart: in a service
    the rest is aiosqlite's worker thread, where SQLite runs.
    """

    def __init__(
        self,
        pids: dict[str, int],
        jvm: dict[str, int] | None = None,
        trees: dict[str, int] | None = None,
    ) -> None:
        self.pids = dict(pids)
        self.jvm = dict(jvm or {})
        self.trees = dict(trees or {})  # servers counted with their children

    def sample(self) -> CpuSample:
        procs: dict[str, tuple[float, float | None]] = {}
        me = os.getpid()
        procs["bench (this process)"] = (self_s(), main_thread_s(me))
        for name, pid in self.jvm.items():
            total = process_s(pid)
            if total is not None:
                procs[name] = (total, None)
        for name, pid in self.pids.items():
            total = process_s(pid)
            if total is not None:
                procs[name] = (total, main_thread_s(pid))
        for name, pid in self.trees.items():
            total = tree_s(pid)
            if total is not None:
                procs[name] = (total, None)
        return CpuSample(time.perf_counter(), machine_busy_s(), procs)


def cpu_between(
    a: CpuSample, b: CpuSample, per: int, stack: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """CPU seconds per process between two samples, per 1000 units of work, and cores;
    ``stack`` names the processes that are the system under test (services and broker, not
    the benchmark's own load generator or trace sink)."""
    wall = b.wall - a.wall
    rows: list[dict[str, Any]] = []
    known = 0.0
    stack_s = 0.0
    for name, (end, end_main) in b.procs.items():
        start, start_main = a.procs.get(name, (end, end_main))
        used = end - start
        known += used
        if name in stack:
            stack_s += used
        main = None if end_main is None or start_main is None else end_main - start_main
        rows.append(
            {
                "process": name,
                "cpu_s": round(used, 3),
                "main_thread_s": None if main is None else round(main, 3),
                "other_threads_s": None if main is None else round(max(0.0, used - main), 3),
                "cpu_s_per_1000": round(used * 1000 / per, 3),
                "cores": round(used / wall, 2) if wall > 0 else 0.0,
            }
        )
    machine = b.machine - a.machine
    others = max(0.0, machine - known)
    rows.sort(key=lambda r: -float(r["cpu_s"]))
    return {
        "wall_s": round(wall, 3),
        "units": per,
        "machine_cores_busy": round(machine / wall, 2) if wall > 0 else 0.0,
        "others_cores": round(others / wall, 2) if wall > 0 else 0.0,
        "cores_available": os.cpu_count() or 1,
        "total_cpu_s_per_1000": round(known * 1000 / per, 2),
        "stack_cores": round(stack_s / wall, 3) if wall > 0 else 0.0,
        "stack_ms_per_unit": round(stack_s * 1000 / per, 2),
        "processes": rows,
    }
