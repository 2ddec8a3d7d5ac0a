"""``choreo publish --file`` as a user runs it, against raw aiokafka ``send_batch`` run alike.

Setup (untimed): N ``OrderPlaced`` events (one order each, two lines, an address, an ISO 8601
``placed_at``) are written as JSON Lines; the raw side's records are those same events
validated and encoded by the CLI's own code beforehand (same keys, values and headers: the
same bytes on the wire), pickled into a file. Every timed run publishes to fresh topics
(a random ``TOPIC_PREFIX``, the catalogue's 3 partitions).

Timed spans: from spawning a process until it exits, so both sides pay an interpreter's
start, their imports and their producer's start and stop:

- project: the ``choreo`` console script, ``choreo publish --file FILE --output json``, with
  ``KAFKA_BOOTSTRAP_SERVERS`` and ``TOPIC_PREFIX`` in its environment: it reads the file,
  validates and encodes every line, sends with the idempotent producer's batch API and
  waits for every acknowledgement.
- raw send_batch: ``python -m bench.raw_publish`` (imports aiokafka only): loads the
  pre-encoded records and sends them with the same producer options through
  ``create_batch``/``send_batch``, one open batch per partition, as the CLI sends; every
  delivery awaited. (Until issue 15 the CLI was timed inside an already-imported process
  against per-record ``send()``; the CLI sends in batches, and a user pays its imports.)
- validate-only (explains the gap, not a target): the CLI's validation pass alone, in this
  process.

Beside the times: each spawned process's CPU (user + system, from its rusage: less disturbed
by a busy machine than wall time) and the CPU used by other processes over the whole run
(the spawned processes counted as the benchmark's own); over 0.25 cores says the figures
are noisy.

Run: ``python -m bench.publish [--events N] [--repeat R] [--json]`` (a private broker is
started unless ``KAFKA_BOOTSTRAP_SERVERS`` is set). Target: project >= 50% of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.entry import on_a_broker, progress_for
from bench.machine import CpuUse, CpuWatch
from events.catalogue import Catalogue
from events.cli.preparer import Preparer, validate_file
from events.cli.tail import topic_partitions
from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.settings import REPO_ROOT
from events.topics import apply_topics

TARGET = 0.50
TOPIC = "orders.requests"
DEFAULT_EVENTS = 100_000
DEFAULT_REPEAT = 3
Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic suffix, key, value, headers


progress = progress_for("bench publish")


def write_events(path: Path, n: int) -> None:
    with path.open("w") as out:
        for i in range(n):
            payload = {
                "order_id": str(uuid.uuid4()),
                "customer_id": f"customer-{i % 500}",
                "lines": [
                    {"sku": f"sku-{i % 50}", "quantity": 1 + i % 3, "unit_price_cents": 1500},
                    {"sku": "gift-wrap", "quantity": 1, "unit_price_cents": 250},
                ],
                "shipping_address": {
                    "name": "Ann Example",
                    "line1": "1 Main Street",
                    "city": "Paris",
                    "postal_code": "75001",
                    "country": "FR",
                },
                "placed_at": "2026-03-01T12:00:00.250Z",
            }
            out.write(json.dumps({"type": "OrderPlaced", "payload": payload}) + "\n")


def pre_encode(path: Path) -> list[Record]:
    """The same events as the raw producer's input: validated, encoded, with headers."""
    preparer = Preparer(AvroCodec(Catalogue.load()))
    with contextlib.redirect_stderr(io.StringIO()):
        records = validate_file(str(path), preparer)
    return [(r.topic, r.envelope.key.encode(), r.value, r.envelope.to_headers()) for r in records]


async def new_prefix(bootstrap: str) -> str:
    prefix = f"bench-{uuid.uuid4().hex[:10]}."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(
        KafkaConnection(bootstrap), [catalogue.topics[prefix + TOPIC]], dead_letters=False
    )
    return prefix


async def topic_size(bootstrap: str, topic: str) -> int:
    # A group id avoids aiokafka's group-less coordinator, whose stop() can misbehave.
    tps = [
        TopicPartition(topic, p) for p in await topic_partitions(KafkaConnection(bootstrap), topic)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=f"size-{uuid.uuid4()}"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def choreo_command() -> list[str]:
    """The console script as installed beside this interpreter (the venv's ``choreo``)."""
    script = Path(sys.executable).with_name("choreo")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "services.tools.stack"]


def children_s() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_process(cmd: list[str], env: dict[str, str], what: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a process from spawn to exit."""
    cpu = children_s()
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    cpu = children_s() - cpu
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"{what} exited {done.returncode}: {detail[-1] if detail else ''}")
    return elapsed, cpu


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOPIC_PREFIX",)}
    env.update(extra)
    return env


def run_cli(bootstrap: str, prefix: str, path: Path) -> tuple[float, float]:
    cmd = [*choreo_command(), "publish", "--file", str(path), "--output", "json"]
    # PYTHONPATH: the console script imports the tree this benchmark runs from (a worktree
    # of another commit for an A/B run), not wherever the package was installed from.
    env = _child_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOPIC_PREFIX=prefix, PYTHONPATH=str(REPO_ROOT)
    )
    return _timed_process(cmd, env, "choreo publish")


def run_raw_batched(bootstrap: str, prefix: str, records_file: Path) -> tuple[float, float]:
    cmd = [
        sys.executable, "-m", "bench.raw_publish",
        "--bootstrap", bootstrap, "--prefix", prefix, "--records", str(records_file),
    ]  # fmt: skip
    return _timed_process(cmd, _child_env(), "bench.raw_publish")


def time_validation(path: Path) -> float:
    preparer = Preparer(AvroCodec(Catalogue.load()))
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        validate_file(str(path), preparer)
    return time.perf_counter() - started


def _check_size(bootstrap: str, topic: str, n: int) -> None:
    size = asyncio.run(topic_size(bootstrap, topic))
    if size != n:
        raise RuntimeError(f"{topic} holds {size} events, expected {n}")


def run(
    bootstrap: str, n: int, repeat: int = DEFAULT_REPEAT, broker_pid: int | None = None
) -> dict[str, Any]:
    """Project and raw, ``repeat`` rounds each (alternating which goes first); medians."""
    with tempfile.TemporaryDirectory(prefix="choreo-bench-publish-") as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, n)
        records = Path(tmp) / "records.pickle"
        records.write_bytes(pickle.dumps(pre_encode(path)))
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS[:2]}
        watch, children = CpuWatch(broker_pid), children_s()
        for round_ in range(repeat):
            # A different order each round, so that no variant always runs first.
            shift = round_ % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                seconds, cpu_s = _run_variant(variant, bootstrap, path, records, n)
                times[variant].append(seconds)
                if variant in cpu:
                    cpu[variant].append(cpu_s)
                progress(f"round {round_ + 1}: {variant} {n / seconds:,.0f} events/s")
        use = _with_children(watch.stop(), children_s() - children)
        size_mb = path.stat().st_size / 1e6
    return _result(n, times, cpu, use, size_mb)


def _with_children(use: CpuUse, children: float) -> CpuUse:
    # CpuWatch counts this process and the broker; the processes timed here are the
    # benchmark's own too, not "other processes".
    share = children / use.wall_s
    others = None if use.other_cores is None else max(0.0, use.other_cores - share)
    return replace(use, bench_cores=use.bench_cores + share, other_cores=others)


VARIANTS = ["project", "raw", "validate only"]


def _run_variant(
    variant: str, bootstrap: str, path: Path, records: Path, n: int
) -> tuple[float, float]:
    """(wall, CPU) seconds; the CPU of a spawned process (validate-only: its wall)."""
    if variant == "validate only":
        seconds = time_validation(path)
        return seconds, seconds
    prefix = asyncio.run(new_prefix(bootstrap))
    if variant == "project":
        timed = run_cli(bootstrap, prefix, path)
    else:
        timed = run_raw_batched(bootstrap, prefix, records)
    _check_size(bootstrap, prefix + TOPIC, n)
    return timed


def _result(
    n: int,
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    use: CpuUse,
    size_mb: float,
) -> dict[str, Any]:
    rates = {name: n / statistics.median(seconds) for name, seconds in times.items()}
    ratio = rates["project"] / rates["raw"]
    project, raw = times["project"], times["raw"]
    return {
        "benchmark": "choreo publish --file (a process) vs raw aiokafka send_batch (a process)",
        "events": n,
        "file_mb": round(size_mb, 1),
        "seconds": {name: [round(s, 3) for s in runs] for name, runs in times.items()},
        "cpu_seconds": {name: [round(s, 3) for s in runs] for name, runs in cpu.items()},
        "cpu": use.to_json(),
        "events_per_s": {name: round(rate) for name, rate in rates.items()},
        "ratio": round(ratio, 3),
        "paired_ratios": [round(r / p, 3) for p, r in zip(project, raw, strict=True)],
        "target": TARGET,
        "result": "PASS" if ratio >= TARGET else "FAIL",
    }


def render(result: dict[str, Any]) -> str:
    runs = len(result["seconds"]["project"])
    lines = [
        f"choreo publish --file: {result['events']:,} OrderPlaced events "
        f"({result['file_mb']} MB JSON Lines), median of {runs} runs; processes spawned "
        "and timed to their exit"
    ]
    labels = {"project": "choreo publish", "raw": "raw send_batch"}
    for name, rate in result["events_per_s"].items():
        seconds = ", ".join(f"{s:.2f}s" for s in result["seconds"][name])
        lines.append(f"  {labels.get(name, name):<21} {rate:>8,} events/s  (runs: {seconds})")
    paired = ", ".join(f"{100 * r:.0f}%" for r in result["paired_ratios"])
    lines.append(
        f"  choreo publish / raw send_batch, each a process from spawn to exit: "
        f"{100 * result['ratio']:.1f}% (target >= {100 * result['target']:.0f}%): "
        f"{'PASS' if result['result'] == 'PASS' else 'MISS'}; within each round: {paired}"
    )
    for name, runs in result["cpu_seconds"].items():
        cpu = ", ".join(f"{s:.2f}s" for s in runs)
        lines.append(f"  CPU of the {labels[name]} process (user + system): {cpu}")
    # The benchmark process's figure counts the processes it timed (see the docstring).
    use = CpuUse(**{k: v for k, v in result["cpu"].items() if k != "noisy"})
    lines.append(f"  {use.describe()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, metavar="N")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="R")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = on_a_broker(
        "choreo-bench-broker-",
        progress,
        lambda bootstrap, pid, _root: run(bootstrap, args.events, args.repeat, pid),
    )
    if result is None:
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
