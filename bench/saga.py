"""``python -m bench.saga``: the reference system as users run it, under steady offered load.

Starts a private Kafka broker on free ports in a temporary directory (or uses
``KAFKA_BOOTSTRAP_SERVERS``); then, for each database backend (``--database``; both by
default: SQLite files, then a private PostgreSQL cluster with its durable defaults, see
``bench.saga_env``), every service of ``choreo up``'s manifest (``services/manifest.yaml``:
the saga's five, query and analytics) as processes, isolated by a random ``TOPIC_PREFIX``,
with tracing as shipped (``TRACE_EXPORTER=otlp``, the batch span processor, spans posted to
``bench.otlp_sink``, which drops them); seeds ample stock and balances and measures:

- warm-up (untimed): ``--warmup`` orders (default 1,000) through the whole saga at once, so
  that the broker's JIT, the services' statement plans and the databases' caches are warm
  (with 200 the broker still spent half again as much CPU per saga afterwards).
- idle: the stack's CPU while nothing is offered.
- the sweep (``bench.sweep``'s rules): steady offered load, orders placed on a 10 ms schedule
  for ``--step-seconds`` (default 30) per rate: 10, 50, 100 and 200 orders/s always (the
  report's rows), then up the ladder until a step fails, then bisection between the last
  pass and the first fail. A step passes when the completions keep up within 2% and p99 <=
  250 ms. An order's latency runs from its scheduled time (a late bench loop counts against
  the saga) until the bench has seen its ``OrderCompleted`` on the prefixed
  ``orders.events`` topic (the relay publishes only committed rows, so it is COMPLETED in the
  orders database; checked once at the end through ``GET /api/v1/orders-summary``).
- the burst (secondary; ``--no-burst``): ``--orders`` orders published at once with
  ``events.publisher.publish``; sagas/s = N / (publish start -> N ``OrderCompleted`` seen).
- CPU: utime+stime of every process from ``/proc``; "stack" = the services and the broker
  JVM (not this load generator, not the trace sink), per saga and as cores busy.

Then the raw baseline: 5 processes of ``bench.raw_hop`` (consumer -> idempotent producer,
acks=all, manual commit per batch) chained over 6 fresh 3-partition topics, values of the
saga events' sizes, key = order id, fed and watched the same way: its CPU per message chain
at 100/s (the ratio line compares it with the saga's CPU per saga at 100/s) and its burst
throughput (the ratio of the burst figures).

The default run (both backends) took 8 minutes on a 2-core machine today, longer the further
the capacity search climbs; ``--quick`` is a 3-minute smoke run (SQLite, 5 s steps, rates
up to 300/s, no bisection). Exit status: 0 when every target of issue 15 is met, 1 when one
is missed, 2 on an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from bench.common import PARTITIONS, kafka, new_topic, partitions, wait_for_group_coordinator
from bench.saga_env import databases, trace_sink, tracing_env
from bench.saga_report import render, targets
from bench.sweep import LADDER, backlog_limit, capacity, judge, next_rate
from events.catalogue import Catalogue
from events.codec import AvroCodec, CodecError
from events.envelope import H_EVENT_TYPE
from events.kafka import reliable_producer
from events.publisher import Draft, prepare, publish
from events.settings import REPO_ROOT
from events.supervisor import ProcessSpec, load_manifest, start, stop, wait_ready
from events.topics import apply_topics
from infra.broker import free_ports
from services.saga_check import SERVICEABLE, Api, World, order_body, placed_draft, seed

DEFAULT_ORDERS = 2000
DEFAULT_WARMUP = 1000
DEFAULT_STEP_S = 30.0
DEFAULT_IDLE_S = 20.0
DEFAULT_BISECTIONS = 2
RAW_RATE = 100.0  # the raw pipe's steady rate, for its CPU per 1,000 messages
QUICK_STEP_S = 5.0
QUICK_IDLE_S = 3.0
QUICK_WARMUP = 200
QUICK_ORDERS = 300
QUICK_LADDER: tuple[float, ...] = (10, 50, 100, 200, 300)
TICK_S = 0.010  # the paced loop's schedule
SKUS = 20
CUSTOMERS = 50
STOCK_PER_SKU = 1_000_000
DEPOSIT_CENTS = 10**12
PRICE_CENTS = 1500
PRODUCER = "bench-saga"
BROKER = "broker (JVM)"
DB_SERVER = "postgres (server + backends)"

# (event type, un-prefixed topic, the service that emitted it)
SAGA_STEPS: list[tuple[str, str, str]] = [
    ("OrderPlaced", "orders.requests", "bench"),
    ("OrderCreated", "orders.events", "orders"),
    ("StockReserved", "inventory.events", "inventory"),
    ("PaymentCaptured", "payments.events", "payments"),
    ("ShipmentScheduled", "shipping.events", "shipping"),
    ("OrderCompleted", "orders.events", "orders"),
    ("CustomerNotified", "notifications.events", "notifications"),  # after the 6 saga hops
]
HOPS = 5  # processes between the first and the last topic of a 6-topic pipe
FAILED = {"OrderRejected", "OrderCancelled"}

Progress = Callable[[str], None]


class SagaBenchError(Exception):
    """The run did not do what it claims (a saga failed, a count is off, a deadline passed)."""


def progress(message: str) -> None:
    print(f"[bench.saga {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ms = [x * 1000 for x in latencies_s]
    return {
        "p50": round(percentile(ms, 50), 1),
        "p95": round(percentile(ms, 95), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
    }


# --------------------------------------------------------------------------- CPU from /proc

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_cpu_s(path: str) -> float | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None when it is gone."""
    return _stat_cpu_s(f"/proc/{pid}/stat")


def tree_cpu_s(pid: int) -> float | None:
    """A server and its children (PostgreSQL's backends): its own time, its reaped
    children's (cutime + cstime: closed connections) and its live children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = sum(int(f) for f in fields[11:15]) / _TICKS
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited between the listing and the read
        if int(child[1]) == pid:
            total += (int(child[11]) + int(child[12])) / _TICKS
    return total


def main_thread_cpu_s(pid: int) -> float | None:
    """The same for the process's main thread only (a service's event loop)."""
    return _stat_cpu_s(f"/proc/{pid}/task/{pid}/stat")


def machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    values = [int(v) for v in fields]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / _TICKS


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        procs["bench (this process)"] = (self_cpu_s(), main_thread_cpu_s(me))
        for name, pid in self.jvm.items():
            total = proc_cpu_s(pid)
            if total is not None:
                procs[name] = (total, None)
        for name, pid in self.pids.items():
            total = proc_cpu_s(pid)
            if total is not None:
                procs[name] = (total, main_thread_cpu_s(pid))
        for name, pid in self.trees.items():
            total = tree_cpu_s(pid)
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


# --------------------------------------------------------------------------- completion watch

Matcher = Callable[[ConsumerRecord], tuple[str, bool] | None]


def _header(record: ConsumerRecord, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return bytes(v).decode()
    return None


def saga_matcher(codec: AvroCodec) -> Matcher:
    """(order id, succeeded) for a terminal order event; None for anything else."""

    def match(record: ConsumerRecord) -> tuple[str, bool] | None:
        event_type = _header(record, H_EVENT_TYPE)
        if event_type == "OrderCompleted":
            try:
                decoded = codec.decode(record.value or b"")
            except CodecError as exc:
                raise SagaBenchError(f"undecodable OrderCompleted: {exc}") from None
            return str(decoded.payload["order_id"]), True
        if event_type in FAILED:
            return (record.key or b"").decode(), False
        return None

    return match


def key_matcher(record: ConsumerRecord) -> tuple[str, bool] | None:
    return (record.key or b"").decode(), True


class CompletionWatch:
    """A raw consumer on the last topic: when did each expected id arrive there?

    Positioned at the topic's end before anything is sent; ``expect`` registers ids with their
    start time; ``wait`` returns once ``count`` of them arrived (no polling: the consumer task
    sets an event).
    """

    def __init__(self, bootstrap: str, topic: str, match: Matcher) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.match = match
        self.started: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.arrived_at: dict[str, float] = {}
        self.failed: list[str] = []
        self._want = 0
        self._reached = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=unique("bench-saga-watch"),
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            tps = partitions(self.topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._run(consumer), name=f"watch {self.topic}")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        hit = self.match(record)
                        if hit is None:
                            continue
                        oid, ok = hit
                        begun = self.started.get(oid)
                        if begun is None or oid in self.latency:
                            continue
                        if not ok:
                            self.failed.append(oid)
                            self._reached.set()
                            continue
                        self.latency[oid] = now - begun
                        self.arrived_at[oid] = now
                if len(self.latency) >= self._want:
                    self._reached.set()
        except BaseException as exc:
            self._error = exc
            self._reached.set()
            raise

    def expect(self, ids: Sequence[str], at: float) -> None:
        for oid in ids:
            self.started[oid] = at

    async def wait(self, count: int, deadline_s: float, what: str) -> float:
        """Until ``count`` expected ids arrived; returns the perf_counter time it happened."""
        self._want = count
        self._reached.clear()
        try:
            async with asyncio.timeout(deadline_s):
                while len(self.latency) < count:
                    if self._error is not None:
                        raise SagaBenchError(f"watch on {self.topic} died: {self._error!r}")
                    if self.failed:
                        raise SagaBenchError(
                            f"{len(self.failed)} order(s) did not complete, e.g. {self.failed[0]}"
                        )
                    await self._reached.wait()
                    self._reached.clear()
        except TimeoutError:
            raise SagaBenchError(
                f"{what}: only {len(self.latency)} of {count} arrived within {deadline_s:.0f}s"
            ) from None
        return max(self.arrived_at.values())

    def latencies(self, ids: Sequence[str]) -> list[float]:
        return [self.latency[i] for i in ids if i in self.latency]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()


# --------------------------------------------------------------------------- Kafka helpers


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=unique("bench-saga-ends"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [tp for topic in topics for tp in partitions(topic)]
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def read_range(
    bootstrap: str, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> list[ConsumerRecord]:
    """Every record between two offset snapshots (untimed, after a phase)."""
    wanted = {tp: end for tp, end in ends.items() if end > starts.get(tp, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=unique("bench-saga-read"),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, starts.get(tp, 0))
        async with asyncio.timeout(60):
            while wanted:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    end = wanted.get(tp)
                    if end is None:
                        continue
                    out += [r for r in records if r.offset < end]
                    if records and records[-1].offset + 1 >= end:
                        del wanted[tp]
                        consumer.pause(tp)
    finally:
        await consumer.stop()
    return out


async def settle(
    bootstrap: str, groups: Sequence[str], topics: Sequence[str], deadline_s: float = 60
) -> None:
    """Until every group committed up to the end of what it consumed and nothing new is
    being produced (the stragglers of a phase: inventory shipping, notifications)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        previous: dict[TopicPartition, int] | None = None
        async with asyncio.timeout(deadline_s):
            while True:
                ends = await end_offsets(bootstrap, topics)
                caught_up = True
                for group in groups:
                    committed = await admin.list_consumer_group_offsets(group)
                    for tp, meta in committed.items():
                        if tp in ends and meta.offset < ends[tp]:
                            caught_up = False
                if caught_up and ends == previous:
                    return
                previous = ends
                await asyncio.sleep(0.3)  # poll interval between phases; bounded above
    finally:
        await admin.close()


def stage_report(
    records: Sequence[ConsumerRecord],
    stages: Sequence[tuple[str, str, str | None]],
    ids: set[str],
    t0_wall_ms: float | None,
) -> dict[str, Any]:
    """From record timestamps: per hop (step i-1 -> step i) latency, and per step the span of
    the phase's records (first/last relative to t0, and the step's own rate).

    ``stages``: (label, topic, event type or None for any record of the topic).
    """
    at: dict[tuple[str, str], float] = {}  # (stage label, order id) -> timestamp ms
    sizes: dict[str, list[int]] = {}
    by_topic: dict[str, list[tuple[str, str | None]]] = {}
    for label, topic, event_type in stages:
        by_topic.setdefault(topic, []).append((label, event_type))
    for r in records:
        oid = (r.key or b"").decode()
        if oid not in ids:
            continue
        event_type = _header(r, H_EVENT_TYPE)
        for label, wanted in by_topic.get(r.topic, []):
            if wanted is None or wanted == event_type:
                at.setdefault((label, oid), float(r.timestamp))
                sizes.setdefault(label, []).append(len(r.value or b""))
    hops = []
    for (prev, _, _), (label, _, _) in itertools.pairwise(stages):
        deltas = [
            (at[(label, oid)] - at[(prev, oid)]) / 1000
            for oid in ids
            if (label, oid) in at and (prev, oid) in at
        ]
        hops.append({"hop": f"{prev} -> {label}", "n": len(deltas), **summary_ms(deltas)})
    steps = []
    for label, _, _ in stages:
        ts = [at[(label, oid)] for oid in ids if (label, oid) in at]
        if not ts:
            continue
        first, last = min(ts), max(ts)
        row: dict[str, Any] = {
            "step": label,
            "n": len(ts),
            "value_bytes": int(statistics.median(sizes[label])),
            "span_s": round((last - first) / 1000, 3),
            "rate_per_s": round(len(ts) / ((last - first) / 1000), 1) if last > first else None,
        }
        if t0_wall_ms is not None:
            row["first_s"] = round((first - t0_wall_ms) / 1000, 3)
            row["last_s"] = round((last - t0_wall_ms) / 1000, 3)
        steps.append(row)
    return {"hops": hops, "steps": steps}


# --------------------------------------------------------------------------- drivers


@dataclass
class Target:
    """Where orders go in and how completion is seen: the saga stack or the raw pipe."""

    name: str
    codec: AvroCodec  # OrderPlaced routed to the first topic
    watch: CompletionWatch
    stages: list[tuple[str, str, str | None]]
    groups: list[str]
    topics: list[str]
    world: World
    customers: list[str]
    skus: list[str]
    pids: dict[str, int] = field(default_factory=dict)
    _n: int = 0

    @property
    def stack(self) -> frozenset[str]:
        """The processes under test: the target's own and the broker."""
        return frozenset(self.pids) | {BROKER, DB_SERVER}

    def drafts(self, n: int) -> list[Draft]:
        out = []
        for _ in range(n):
            self._n += 1
            cust = self.customers[self._n % len(self.customers)]
            sku = self.skus[self._n % len(self.skus)]
            body = order_body(self.world, cust, [(sku, 1, PRICE_CENTS)], SERVICEABLE)
            out.append(placed_draft(self.world, "success", body))
        return out


def _ids(drafts: Sequence[Draft]) -> list[str]:
    return [d.key for d in drafts]


async def warm_up(bootstrap: str, target: Target, n: int) -> dict[str, int]:
    """``n`` orders at once, untimed; returns the median value size of each step's events."""
    drafts = target.drafts(n)
    starts = await end_offsets(bootstrap, target.topics)
    target.watch.expect(_ids(drafts), time.perf_counter())
    await publish(target.codec, bootstrap, drafts, producer=PRODUCER)
    await _wait_ids(target, _ids(drafts), 120, f"{target.name} warm-up")
    await settle(bootstrap, target.groups, target.topics)
    ends = await end_offsets(bootstrap, target.topics)
    records = await read_range(bootstrap, starts, ends)
    report = stage_report(records, target.stages, set(_ids(drafts)), None)
    return {st["step"]: st["value_bytes"] for st in report["steps"]}


async def _wait_ids(target: Target, ids: Sequence[str], deadline_s: float, what: str) -> float:
    wanted = set(ids)
    done_before = sum(1 for i in target.watch.latency if i not in wanted)
    return await target.watch.wait(done_before + len(ids), deadline_s, what)


async def throughput(
    bootstrap: str, target: Target, n: int, probe: CpuProbe, progress: Progress
) -> dict[str, Any]:
    drafts = target.drafts(n)
    ids = _ids(drafts)
    starts = await end_offsets(bootstrap, target.topics)
    progress(f"{target.name}: throughput, {n} orders published at once")
    cpu0 = probe.sample()
    t0 = time.perf_counter()
    t0_wall_ms = time.time() * 1000
    target.watch.expect(ids, t0)
    publisher = asyncio.create_task(publish(target.codec, bootstrap, drafts, producer=PRODUCER))
    done_at = await _wait_ids(target, ids, 60 + n / 20, f"{target.name} throughput")
    cpu1 = probe.sample()
    published = await publisher
    if len(published) != n:
        raise SagaBenchError(f"published {len(published)} of {n}")
    elapsed = done_at - t0
    await settle(bootstrap, target.groups, target.topics)
    cpu2 = probe.sample()
    ends = await end_offsets(bootstrap, target.topics)
    records = await read_range(bootstrap, starts, ends)
    lat = target.watch.latencies(ids)
    return {
        "n": n,
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "latency_ms": summary_ms(lat),
        "cpu_timed": cpu_between(cpu0, cpu1, n, stack=target.stack),
        "cpu_all_work": cpu_between(cpu0, cpu2, n, stack=target.stack),
        "stages": stage_report(records, target.stages, set(ids), t0_wall_ms),
    }


async def fixed_rate(
    bootstrap: str,
    target: Target,
    rate: float,
    seconds: float,
    probe: CpuProbe,
    progress: Progress,
    *,
    abort_backlog: int | None = None,
    stages: bool = True,
) -> dict[str, Any]:
    """Orders at ``rate`` for ``seconds``, until all complete. With ``abort_backlog``, the
    offering stops once that many orders wait (the step has failed; see bench.sweep)."""
    total = max(1, int(rate * seconds))
    starts = await end_offsets(bootstrap, target.topics) if stages else {}
    progress(f"{target.name}: {rate:g} orders/s for {seconds:g}s ({total} orders)")
    producer = reliable_producer(bootstrap, client_id=f"{PRODUCER}-paced")
    await producer.start()
    ids: list[str] = []
    futures: list[Awaitable[Any]] = []
    max_lag = 0.0
    aborted = False
    done_before = len(target.watch.latency)
    try:
        cpu0 = probe.sample()
        begin = time.perf_counter()
        sent = 0
        tick = 0
        while sent < total:
            tick += 1
            scheduled = begin + tick * TICK_S
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing on a schedule, not synchronisation
            max_lag = max(max_lag, time.perf_counter() - scheduled)
            if abort_backlog is not None:
                waiting = sent - (len(target.watch.latency) - done_before)
                if waiting > abort_backlog:
                    aborted = True
                    break
            due = min(total, math.floor(rate * tick * TICK_S + 1e-9))
            if due <= sent:
                continue
            drafts = target.drafts(due - sent)
            ready = prepare(target.codec, drafts, PRODUCER)
            batch_ids = _ids(drafts)
            target.watch.expect(batch_ids, scheduled)
            ids += batch_ids
            for r in ready:
                futures.append(
                    await producer.send(
                        r.topic,
                        r.value,
                        key=r.envelope.key.encode(),
                        headers=r.envelope.to_headers(),
                    )
                )
            sent = due
        sending_s = time.perf_counter() - begin
        await asyncio.gather(*futures)
        # A stack that fell behind drains its backlog before the next step starts.
        done_at = await _wait_ids(target, ids, 120, f"{target.name} at {rate:g}/s")
        cpu1 = probe.sample()
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
    await settle(bootstrap, target.groups, target.topics)
    n = len(ids)
    lat = target.watch.latencies(ids)
    # Rates between the first and the last order at each end, so that a step's latency
    # (its offset) does not count as a shortfall; a stack that falls behind completes its
    # last orders late, which lowers the completion rate.
    sent_at = [target.watch.started[i] for i in ids]
    arrived = [target.watch.arrived_at[i] for i in ids]
    offered_s = max(sent_at) - min(sent_at)
    completed_s = max(arrived) - min(arrived)
    out: dict[str, Any] = {
        "n": n,
        "rate": rate,
        "aborted": aborted,
        "achieved_rate": round((n - 1) / offered_s, 1) if offered_s > 0 else rate,
        "max_schedule_lag_ms": round(max_lag * 1000, 1),
        "sending_s": round(sending_s, 3),
        "seconds": round(done_at - begin, 3),
        "completion_rate": round((n - 1) / completed_s, 1) if completed_s > 0 else rate,
        "latency_ms": summary_ms(lat),
        "cpu": cpu_between(cpu0, cpu1, n, stack=target.stack),
    }
    if stages:
        ends = await end_offsets(bootstrap, target.topics)
        records = await read_range(bootstrap, starts, ends)
        out["stages"] = stage_report(records, target.stages, set(ids), None)
    return out


async def idle(
    target: Target, seconds: float, probe: CpuProbe, progress: Progress
) -> dict[str, Any]:
    """The stack's CPU while nothing is offered (its timers, polls and heartbeats)."""
    progress(f"{target.name}: idle for {seconds:g}s")
    cpu0 = probe.sample()
    await asyncio.sleep(seconds)  # the measurement window itself
    return cpu_between(cpu0, probe.sample(), 1, stack=target.stack)


async def sweep(
    bootstrap: str,
    target: Target,
    probe: CpuProbe,
    *,
    step_s: float,
    ladder: Sequence[float],
    bisections: int,
    progress: Progress,
) -> dict[str, Any]:
    """The reported rates, then the capacity search (bench.sweep's rules)."""
    outcomes: dict[float, bool] = {}
    steps: list[dict[str, Any]] = []
    while (rate := next_rate(outcomes, ladder, bisections)) is not None:
        step = await fixed_rate(
            bootstrap,
            target,
            rate,
            step_s,
            probe,
            progress,
            abort_backlog=backlog_limit(rate),
            stages=False,
        )
        verdict = judge(
            rate,
            step["achieved_rate"],
            step["completion_rate"],
            step["latency_ms"].get("p99", math.inf),
            step["aborted"],
        )
        step["passed"], step["why"] = verdict.passed, verdict.why
        progress(
            f"{target.name}: {rate:g}/s {'pass' if verdict.passed else 'FAIL'} ({verdict.why}); "
            f"p99 {step['latency_ms'].get('p99', 0):.0f} ms, "
            f"stack {step['cpu']['stack_cores']:.2f} cores"
        )
        outcomes[rate] = verdict.passed
        steps.append(step)
    steps.sort(key=lambda st: float(st["rate"]))
    return {"steps": steps, "capacity": capacity(outcomes)}


# --------------------------------------------------------------------------- the saga stack


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    var_dir: Path
    specs: list[ProcessSpec]
    env: dict[str, str]
    api: Api
    pids: dict[str, int]


async def start_stack(
    bootstrap: str,
    root: Path,
    consumer_batch: int | None,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """Every service of ``choreo up``'s manifest (analytics and query included), isolated by
    a random topic prefix, with ``extra_env`` (database URLs, tracing) as their settings."""
    prefix = unique("bench-saga") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    if any(t.partitions != PARTITIONS for t in catalogue.topics.values()):
        raise SagaBenchError(f"the saga's topics no longer all have {PARTITIONS} partitions")
    await apply_topics(bootstrap, list(catalogue.topics.values()))
    manifest = load_manifest()
    specs = [
        ProcessSpec(s.name, s.module, port)
        for s, port in zip(manifest, free_ports(len(manifest)), strict=True)
    ]
    env = {"TOPIC_PREFIX": prefix, **(extra_env or {})}
    if consumer_batch is not None:
        env["CONSUMER_BATCH"] = str(consumer_batch)
    var_dir = root / prefix.rstrip(".")
    pids = await asyncio.to_thread(start, specs, var_dir=var_dir, bootstrap=bootstrap, env=env)
    stack = Stack(
        bootstrap,
        prefix,
        var_dir,
        specs,
        env,
        Api({s.name: s.port for s in specs}),
        {s.name: pid for s, pid in zip(specs, pids, strict=True)},
    )
    try:
        await asyncio.to_thread(wait_ready, specs, var_dir=var_dir, deadline_s=120)
    except BaseException:
        await stop_stack(stack)
        raise
    return stack


async def stop_stack(stack: Stack) -> None:
    with contextlib.suppress(Exception):
        await stack.api.close()
    await asyncio.to_thread(stop, stack.specs, var_dir=stack.var_dir)


async def saga_target(stack: Stack, name: str = "saga") -> Target:
    catalogue = Catalogue.load().prefixed(stack.prefix)
    codec = AvroCodec(catalogue)
    world = World()
    skus = [f"s{i}" for i in range(SKUS)]
    customers = [f"c{i}" for i in range(CUSTOMERS)]
    await seed(
        world,
        codec,
        stack.bootstrap,
        stack.api,
        stock={s: STOCK_PER_SKU for s in skus},
        deposits={c: DEPOSIT_CENTS for c in customers},
    )
    watch = CompletionWatch(stack.bootstrap, stack.prefix + "orders.events", saga_matcher(codec))
    await watch.start()
    return Target(
        name=name,
        codec=codec,
        watch=watch,
        stages=[(et, stack.prefix + topic, et) for et, topic, _ in SAGA_STEPS],
        groups=[stack.prefix + s.name for s in stack.specs],
        topics=sorted({stack.prefix + t for _, t, _ in SAGA_STEPS}),
        world=world,
        customers=customers,
        skus=skus,
        pids=dict(stack.pids),
    )


async def completed_count(stack: Stack) -> int:
    summary = await stack.api.get("orders", "/orders-summary") or {}
    bad = {k: v for k, v in summary.items() if k != "COMPLETED" and v}
    if bad:
        raise SagaBenchError(f"orders not all COMPLETED: {summary}")
    return int(summary.get("COMPLETED", 0))


# --------------------------------------------------------------------------- the raw pipe


@dataclass
class Pipe:
    topics: list[str]
    groups: list[str]
    procs: list[asyncio.subprocess.Process]


async def start_pipe(bootstrap: str, value_sizes: Sequence[int]) -> Pipe:
    topics = [await new_topic(bootstrap, f"bench-raw-t{i}") for i in range(HOPS + 1)]
    groups = [unique(f"bench-raw-hop{i}") for i in range(1, HOPS + 1)]
    procs: list[asyncio.subprocess.Process] = []
    pipe = Pipe(topics, groups, procs)
    try:
        for i in range(HOPS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.raw_hop",
                    "--bootstrap",
                    bootstrap,
                    "--source",
                    topics[i],
                    "--sink",
                    topics[i + 1],
                    "--group",
                    groups[i],
                    "--value-size",
                    str(value_sizes[i]),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    cwd=REPO_ROOT,
                )
            )
        async with asyncio.timeout(90):
            for i, proc in enumerate(procs):
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise SagaBenchError(f"raw hop {i + 1} did not start (exit {proc.returncode})")
    except BaseException:
        await stop_pipe(pipe)
        raise
    return pipe


async def stop_pipe(pipe: Pipe) -> None:
    for proc in pipe.procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in pipe.procs:
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def raw_target(bootstrap: str, pipe: Pipe) -> Target:
    codec = AvroCodec(Catalogue.load().retarget({"OrderPlaced": pipe.topics[0]}, 3))
    watch = CompletionWatch(bootstrap, pipe.topics[-1], key_matcher)
    await watch.start()
    world = World()
    return Target(
        name="raw pipe",
        codec=codec,
        watch=watch,
        stages=[(f"t{i}", t, None) for i, t in enumerate(pipe.topics)],
        groups=pipe.groups,
        topics=pipe.topics,
        world=world,
        customers=[f"c{i}" for i in range(CUSTOMERS)],
        skus=[f"s{i}" for i in range(SKUS)],
        pids={f"raw hop {i + 1}": p.pid for i, p in enumerate(pipe.procs) if p.pid is not None},
    )


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...] = ("sqlite", "postgres")
    step_s: float = DEFAULT_STEP_S
    idle_s: float = DEFAULT_IDLE_S
    ladder: tuple[float, ...] = LADDER
    bisections: int = DEFAULT_BISECTIONS
    warmup: int = DEFAULT_WARMUP
    burst: int = DEFAULT_ORDERS  # 0: no burst figure
    raw_rate: float = RAW_RATE
    tracing: bool = True
    consumer_batch: int | None = None


async def run_backend(
    bootstrap: str,
    workdir: Path,
    backend: str,
    opts: Options,
    jvm: dict[str, int],
    progress: Progress,
) -> dict[str, Any]:
    """One stack on one database: warm-up, idle, the sweep, then the burst."""
    names = [s.name for s in load_manifest()]
    async with contextlib.AsyncExitStack() as scope:
        sink = await scope.enter_async_context(trace_sink()) if opts.tracing else None
        urls, server_pid = scope.enter_context(databases(backend, names))
        progress(f"{backend}: starting {len(names)} services ({', '.join(names)})")
        stack = await start_stack(
            bootstrap, workdir, opts.consumer_batch, {**urls, **tracing_env(sink)}
        )
        target: Target | None = None
        try:
            target = await saga_target(stack, f"saga on {backend}")
            extra = {"otlp sink (Jaeger's stand-in)": sink.pid} if sink is not None else {}
            trees = {DB_SERVER: server_pid} if server_pid is not None else {}
            probe = CpuProbe({**target.pids, **extra}, jvm, trees)
            progress(f"{backend}: warm-up, {opts.warmup} orders")
            sizes = await warm_up(bootstrap, target, opts.warmup)
            idle_cpu = await idle(target, opts.idle_s, probe, progress)
            swept = await sweep(
                bootstrap,
                target,
                probe,
                step_s=opts.step_s,
                ladder=opts.ladder,
                bisections=opts.bisections,
                progress=progress,
            )
            burst = None
            if opts.burst:
                burst = await throughput(bootstrap, target, opts.burst, probe, progress)
            expected = opts.warmup + sum(st["n"] for st in swept["steps"]) + opts.burst
            completed = await completed_count(stack)
            if completed != expected:
                raise SagaBenchError(f"orders-summary: {completed} COMPLETED, expected {expected}")
            spans = await asyncio.to_thread(sink.stats) if sink is not None else None
        finally:
            if target is not None:
                await target.watch.close()
            progress(f"{backend}: stopping the services")
            await stop_stack(stack)
    return {
        "backend": backend,
        "services": names,
        "value_sizes": sizes,
        "idle": idle_cpu,
        "sweep": swept,
        "burst": burst,
        "checked_completed": completed,
        "trace_exports": spans,
    }


async def run_raw(
    bootstrap: str, sizes: dict[str, int], opts: Options, jvm: dict[str, int], progress: Progress
) -> dict[str, Any]:
    """The raw 6-hop pipe: its burst throughput and its CPU at ``opts.raw_rate``."""
    value_sizes = [sizes.get(et, 0) for et, _, _ in SAGA_STEPS[1 : HOPS + 1]]
    progress(f"starting the raw pipe: {HOPS} hop processes over {HOPS + 1} topics")
    pipe = await start_pipe(bootstrap, value_sizes)
    raw: Target | None = None
    try:
        raw = await raw_target(bootstrap, pipe)
        probe = CpuProbe(raw.pids, jvm)
        await warm_up(bootstrap, raw, opts.warmup)
        burst = (
            await throughput(bootstrap, raw, opts.burst, probe, progress) if opts.burst else None
        )
        steady = await fixed_rate(
            bootstrap, raw, opts.raw_rate, opts.step_s, probe, progress, stages=False
        )
    finally:
        if raw is not None:
            await raw.watch.close()
        await stop_pipe(pipe)
    return {"value_sizes": value_sizes, "burst": burst, "steady": steady}


async def run(
    bootstrap: str,
    *,
    workdir: Path,
    opts: Options,
    broker_pid: int | None = None,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Every measurement of this module; the dict is what ``--json`` prints."""
    started = time.perf_counter()
    await wait_for_group_coordinator(bootstrap)
    jvm = {BROKER: broker_pid} if broker_pid is not None else {}
    result: dict[str, Any] = {"options": asdict(opts), "backends": {}}
    for backend in opts.backends:
        result["backends"][backend] = await run_backend(
            bootstrap, workdir, backend, opts, jvm, progress
        )
    first = result["backends"][opts.backends[0]]
    result["raw"] = await run_raw(bootstrap, first["value_sizes"], opts, jvm, progress)
    result["targets"] = targets(result)
    result["passed"] = all(t["passed"] for t in result["targets"])
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------- entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.saga",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--database", choices=("sqlite", "postgres", "both"), default=None,
        help="the services' database: SQLite files, a durable PostgreSQL, or one after the "
        "other (default both; --quick: sqlite)",
    )  # fmt: skip
    parser.add_argument(
        "--step-seconds", type=float, default=None, metavar="S",
        help=f"how long each offered rate is held (default {DEFAULT_STEP_S:g}; --quick: "
        f"{QUICK_STEP_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--rates", default=None, metavar="R[,R...]",
        help="the ladder of offered rates the capacity search climbs (default "
        f"{','.join(f'{r:g}' for r in LADDER)}); 10, 50, 100 and 200 are always measured "
        "when listed",
    )  # fmt: skip
    parser.add_argument(
        "--bisections", type=int, default=None, metavar="K",
        help=f"steps between the last pass and the first fail (default {DEFAULT_BISECTIONS})",
    )  # fmt: skip
    parser.add_argument(
        "--no-burst", action="store_true",
        help="skip the burst figure (orders published at once)",
    )  # fmt: skip
    parser.add_argument(
        "--orders", type=int, default=None, metavar="N",
        help=f"orders published at once for the burst figure (default {DEFAULT_ORDERS})",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=None, metavar="N",
        help=f"orders through the saga before anything is timed (default {DEFAULT_WARMUP})",
    )  # fmt: skip
    parser.add_argument(
        "--no-tracing", action="store_true",
        help="TRACE_EXPORTER=none instead of the shipped OTLP export (to a sink that drops)",
    )  # fmt: skip
    parser.add_argument(
        "--consumer-batch", type=int, default=None, metavar="B",
        help="CONSUMER_BATCH for the services (default: the services' own default)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run: SQLite, short steps, a short ladder, no bisection",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        ladder = (
            tuple(float(r) for r in args.rates.split(",") if r.strip())
            if args.rates
            else (QUICK_LADDER if args.quick else LADDER)
        )
    except ValueError:
        parser.error(f"--rates: comma-separated numbers, got {args.rates!r}")
    if not ladder or min(ladder) <= 0:
        parser.error("--rates must be positive")
    quick = args.quick
    database = args.database or ("sqlite" if quick else "both")
    burst = 0 if args.no_burst else (args.orders or (QUICK_ORDERS if quick else DEFAULT_ORDERS))
    args.opts = Options(
        backends=("sqlite", "postgres") if database == "both" else (database,),
        step_s=args.step_seconds or (QUICK_STEP_S if quick else DEFAULT_STEP_S),
        idle_s=QUICK_IDLE_S if quick else DEFAULT_IDLE_S,
        ladder=tuple(sorted(ladder)),
        bisections=args.bisections if args.bisections is not None else (0 if quick else 2),
        warmup=args.warmup or (QUICK_WARMUP if quick else DEFAULT_WARMUP),
        burst=burst,
        tracing=not args.no_tracing,
        consumer_batch=args.consumer_batch,
    )
    if args.opts.step_s <= 0 or args.opts.warmup < 1:
        parser.error("--step-seconds and --warmup must be positive")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finallies that stop everything


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="choreo-bench-saga-") as tmp:
            root = Path(tmp)
            with kafka(root, progress) as (bootstrap, broker_pid):
                result = asyncio.run(
                    run(
                        bootstrap,
                        workdir=root / "stacks",
                        opts=args.opts,
                        broker_pid=broker_pid,
                        progress=progress,
                    )
                )
    except Exception as exc:  # one line naming the failure instead of a traceback wall
        logging.getLogger("bench.saga").exception("benchmark failed: %s", exc)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
