"""``python -m bench``: the project's throughput against raw aiokafka, measured in one run.

Starts a private Kafka broker on free ports in a temporary directory (or uses
``KAFKA_BOOTSTRAP_SERVERS`` when set), runs the benchmarks, prints a table and stops the broker.
Every timed run uses fresh random topics (3 partitions) and, where it writes, a fresh SQLite
database; the project and raw aiokafka handle identical bytes; the variants' order rotates on
each repeat and the figure is the median. Exit status: 0 when every target is met, 1 when one is
missed, 2 on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import consumer, relay
from bench.common import PARTITIONS, schema_registry, wait_for_group_coordinator
from bench.entry import on_a_broker, progress_for
from bench.machine import CpuUse, CpuWatch
from bench.profiling import Profiler
from bench.runs import PartRun, Result

DEFAULT_EVENTS = 20_000
DEFAULT_REPEAT = 3
WARMUP_EVENTS = 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"events per timed run (default {DEFAULT_EVENTS}: the whole run takes under "
        "3 minutes on a 2-core machine)",
    )
    parser.add_argument(
        "--only", choices=["relay", "consumer"], help="run one benchmark instead of both"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        metavar="R",
        help=f"timed runs per variant; the median counts (default {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--registry",
        action="store_true",
        help="also run each benchmark with events in the schema registry wire format "
        "(SCHEMA_FORMAT=registry; a private schema registry is started), after its "
        "single-object run, each against its own raw figure",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the timed runs, profile one more (untimed) run of the project's path with "
        "cProfile; .pstats and .txt reports go to DIR",
    )
    args = parser.parse_args(argv)
    if args.events < 100:
        parser.error("--events must be at least 100")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


progress = progress_for("bench")


async def run_all(
    args: argparse.Namespace,
    bootstrap: str,
    workdir: Path,
    profiler: Profiler | None,
    registry: str | None = None,
) -> list[Result]:
    """Each part in single-object format, then (with a ``registry`` URL) in registry format."""
    warmup = min(WARMUP_EVENTS, args.events)
    await wait_for_group_coordinator(bootstrap)
    part = PartRun(bootstrap, args.events, args.repeat, workdir, warmup, profiler, progress)
    parts = {"relay": relay.run, "consumer": consumer.run}
    results = []
    for name, run in parts.items():
        if args.only in (None, name):
            results.append(await run(part))
            if registry is not None:
                results.append(await run(part, registry))
    return results


def _rate(x: float) -> str:
    return f"{x:,.0f}/s"


def render(results: list[Result], args: argparse.Namespace, elapsed_s: float, cpu: CpuUse) -> str:
    lines = [
        f"choreo benchmarks: {args.events:,} Ping events per run, {PARTITIONS} partitions, "
        f"median of {args.repeat} run(s), whole run {elapsed_s:.0f}s",
        cpu.describe(),
        "",
    ]
    header = ("benchmark", "project", "raw aiokafka", "ratio", "target", "result")
    rows = [
        (
            r.name,
            _rate(r.project.rate),
            _rate(r.raw.rate),
            f"{100 * r.ratio:.1f}%",
            f">= {100 * r.target:.0f}%",
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    for r in results:
        lines += ["", f"{r.name}: {r.span}"]
        label_w = max(len(s.label) for s in [r.project, r.raw, *r.variants])
        for s in [r.project, r.raw, *r.variants]:
            runs = ", ".join(f"{x:,.0f}" for x in s.rates)
            loop = s.median_extra("loop thread CPU share") or 0.0
            threads = s.median_extra("other threads CPU share") or 0.0
            lines.append(
                f"  {s.label.ljust(label_w)}  {_rate(s.rate):>10}  {s.median_s:6.2f}s  "
                f"loop {100 * loop:3.0f}% db {100 * threads:3.0f}%  (runs: {runs} ev/s)"
            )
        paired = ", ".join(f"{100 * x:.0f}%" for x in r.paired_ratios)
        lines.append(f"  project/raw within each round: {paired}")
        if r.breakdown:
            lines.append("  where the time goes (seconds for N events, median run or medians):")
            total = r.breakdown_total or r.project.median_s
            what_w = max(len(w) for w, _ in r.breakdown)
            for what, seconds in r.breakdown:
                lines.append(
                    f"    {what.ljust(what_w)}  {seconds:6.2f}s  {100 * seconds / total:5.1f}%"
                )
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    profiler: Profiler | None = None

    def body(bootstrap: str, broker_pid: int | None, root: Path) -> tuple[list[Result], CpuUse]:
        nonlocal profiler
        workdir = root / "db"
        workdir.mkdir()
        profiler = Profiler(args.profile.absolute(), broker_pid) if args.profile else None
        with contextlib.ExitStack() as stack:
            registry = (
                stack.enter_context(schema_registry(root, progress)) if args.registry else None
            )
            watch = CpuWatch(broker_pid)
            results = asyncio.run(run_all(args, bootstrap, workdir, profiler, registry))
            return results, watch.stop()

    done = on_a_broker("choreo-bench-", progress, body)
    if done is None:
        return 2
    results, cpu = done
    elapsed = time.perf_counter() - started
    if args.json:
        doc: dict[str, Any] = {
            "events": args.events,
            "repeat": args.repeat,
            "partitions": PARTITIONS,
            "elapsed_s": round(elapsed, 1),
            "cpu": cpu.to_json(),
            "benchmarks": [r.to_json() for r in results],
            "passed": all(r.passed for r in results),
        }
        if profiler is not None:
            doc["profiles"] = {
                name: str(profiler.directory / f"{name}.pstats") for name in profiler.reports
            }
        print(json.dumps(doc, indent=2))
    else:
        print(render(results, args, elapsed, cpu))
        if profiler is not None:
            for text in profiler.reports.values():
                print()
                print(text)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
