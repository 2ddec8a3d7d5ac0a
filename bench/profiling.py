"""Optional profiling of the project's path (``--profile DIR``), in runs that are not timed.

cProfile sees the event-loop thread only (every asyncio task: the relay or consumer, aiokafka's
sender and fetcher). SQLite runs in aiosqlite's worker thread, so CPU seconds are also taken per
thread (``bench.cpu``: /proc on Linux), and for the broker's JVM when its pid is known: on a
2-core machine the broker, the loop thread and the database thread compete for the same cores.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import process_s, self_s


def _broker_s(pid: int | None) -> float | None:
    return None if pid is None else (process_s(pid) or 0.0)


@dataclass
class CpuSplit:
    wall_s: float
    loop_thread_s: float
    other_threads_s: float
    broker_s: float | None

    def describe(self) -> str:
        parts = [
            f"wall {self.wall_s:.2f}s",
            f"event-loop thread CPU {self.loop_thread_s:.2f}s "
            f"({100 * self.loop_thread_s / self.wall_s:.0f}% of wall)",
            f"other threads (aiosqlite, ...) CPU {self.other_threads_s:.2f}s",
        ]
        if self.broker_s is not None:
            parts.append(f"broker JVM CPU {self.broker_s:.2f}s")
        return ", ".join(parts)


@dataclass
class Profiler:
    directory: Path
    broker_pid: int | None = None
    top: int = 25
    reports: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, CpuSplit] = field(default_factory=dict)

    @contextlib.contextmanager
    def profile(self, name: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        process_before = self_s()
        loop_before = time.thread_time()  # this thread runs the event loop
        broker_before = _broker_s(self.broker_pid) or 0.0
        started = time.perf_counter()
        prof = cProfile.Profile()
        prof.enable()
        try:
            yield
        finally:
            prof.disable()
            wall = time.perf_counter() - started
            loop = time.thread_time() - loop_before
            others = max(0.0, self_s() - process_before - loop)
            broker_now = _broker_s(self.broker_pid)
            broker = None if broker_now is None else broker_now - broker_before
            self.cpu[name] = CpuSplit(wall, loop, others, broker)
            path = self.directory / f"{name}.pstats"
            prof.dump_stats(path)
            self.reports[name] = self._report(name, prof, path)

    def _report(self, name: str, prof: cProfile.Profile, path: Path) -> str:
        out = io.StringIO()
        out.write(f"== profile: {name} ({path}) ==\n{self.cpu[name].describe()}\n")
        stats = pstats.Stats(prof, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(self.top)
        out.write("-- cumulative, project code only --\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(r"/events/", self.top)
        text = out.getvalue()
        (self.directory / f"{name}.txt").write_text(text)
        return text
