"""``python -m bench.saga``: the reference saga end to end, against a raw aiokafka pipe of as
many hops, measured in one run.

Starts a private Kafka broker on free ports in a temporary directory (or uses
``KAFKA_BOOTSTRAP_SERVERS``), then an isolated stack of the five services as processes (random
``TOPIC_PREFIX``, fresh ``VAR_DIR`` and SQLite databases, free HTTP ports), seeds ample stock
and balances, and measures:

- warm-up (untimed, before each side's figures): ``--warmup`` orders (default 1,000) through
  the whole saga, so that the broker's JIT, the services' statement plans and SQLite's page
  cache are warm; with 200 the broker still spent half again as much CPU per saga in the
  timed run, and the figure moved by 20% between runs.
- throughput: N ``OrderPlaced`` events (success path) published at once with
  ``events.publisher.publish``; completed sagas/s = N / (publish start -> the bench has seen N
  ``OrderCompleted`` on the prefixed ``orders.events`` topic). The relay publishes a row only
  after its transaction committed, so an ``OrderCompleted`` on Kafka means the order is
  COMPLETED in the orders database (checked once at the end through
  ``GET /api/v1/orders-summary``). Latency of an order = its publish start -> the bench received
  its ``OrderCompleted``.
- latency at a fixed rate: orders placed on a 10 ms schedule at ``--rate`` orders/s for
  ``--seconds``; an order's latency starts at its batch's scheduled time (a late bench loop
  counts against the saga, never for it).
- the raw baseline: 5 processes of ``bench.raw_hop`` (consumer -> idempotent producer, acks=all,
  manual commit per batch) chained over 6 fresh 3-partition topics, values of the saga events'
  sizes, key = order id, fed and watched the same way.
- CPU: utime+stime of every service (its asyncio loop thread apart from the rest, i.e.
  aiosqlite's SQLite thread), the broker JVM, the raw hops and this process, from ``/proc``;
  reported per 1000 sagas so the bottleneck is visible, with what other processes used.
- per-hop times from the Kafka record timestamps of each step's event (read after the phase,
  untimed).
- the throughput again with other ``CONSUMER_BATCH`` values (a fresh stack each;
  ``--try-batch``, by default 100 and 2000).

The whole default run takes about 3 minutes on a 2-core machine.

Exit status: 0 when both targets are met, 1 when one is missed, 2 on an error.
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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from bench.common import PARTITIONS, kafka, new_topic, partitions, wait_for_group_coordinator
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
DEFAULT_RATE = 100.0
DEFAULT_SECONDS = 15.0
DEFAULT_WARMUP = 1000
DEFAULT_TRY_BATCH = "100,2000"
TARGET_SAGAS_S = 1000.0
TARGET_P99_MS = 250.0
TICK_S = 0.010  # the paced loop's schedule
SKUS = 20
CUSTOMERS = 50
STOCK_PER_SKU = 1_000_000
DEPOSIT_CENTS = 10**12
PRICE_CENTS = 1500
PRODUCER = "bench-saga"

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

    def __init__(self, pids: dict[str, int], jvm: dict[str, int] | None = None) -> None:
        self.pids = dict(pids)
        self.jvm = dict(jvm or {})

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
        return CpuSample(time.perf_counter(), machine_busy_s(), procs)


def cpu_between(a: CpuSample, b: CpuSample, per: int) -> dict[str, Any]:
    """CPU seconds per process between two samples, per 1000 units of work, and cores."""
    wall = b.wall - a.wall
    rows: list[dict[str, Any]] = []
    known = 0.0
    for name, (end, end_main) in b.procs.items():
        start, start_main = a.procs.get(name, (end, end_main))
        used = end - start
        known += used
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


async def warm_up(bootstrap: str, target: Target, n: int) -> None:
    drafts = target.drafts(n)
    target.watch.expect(_ids(drafts), time.perf_counter())
    await publish(target.codec, bootstrap, drafts, producer=PRODUCER)
    await _wait_ids(target, _ids(drafts), 120, f"{target.name} warm-up")
    await settle(bootstrap, target.groups, target.topics)


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
        "cpu_timed": cpu_between(cpu0, cpu1, n),
        "cpu_all_work": cpu_between(cpu0, cpu2, n),
        "stages": stage_report(records, target.stages, set(ids), t0_wall_ms),
    }


async def fixed_rate(
    bootstrap: str,
    target: Target,
    rate: float,
    seconds: float,
    probe: CpuProbe,
    progress: Progress,
) -> dict[str, Any]:
    total = max(1, int(rate * seconds))
    starts = await end_offsets(bootstrap, target.topics)
    progress(f"{target.name}: {rate:g} orders/s for {seconds:g}s ({total} orders)")
    producer = reliable_producer(bootstrap, client_id=f"{PRODUCER}-paced")
    await producer.start()
    ids: list[str] = []
    futures: list[Awaitable[Any]] = []
    max_lag = 0.0
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
        done_at = await _wait_ids(target, ids, 60, f"{target.name} fixed rate")
        cpu1 = probe.sample()
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
    await settle(bootstrap, target.groups, target.topics)
    ends = await end_offsets(bootstrap, target.topics)
    records = await read_range(bootstrap, starts, ends)
    lat = target.watch.latencies(ids)
    return {
        "n": total,
        "rate": rate,
        "achieved_rate": round(total / sending_s, 1),
        "max_schedule_lag_ms": round(max_lag * 1000, 1),
        "seconds": round(done_at - begin, 3),
        "completion_rate": round(total / (done_at - begin), 1),
        "latency_ms": summary_ms(lat),
        "cpu": cpu_between(cpu0, cpu1, total),
        "stages": stage_report(records, target.stages, set(ids), None),
    }


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


OBSERVERS = frozenset({"analytics"})


async def start_stack(bootstrap: str, root: Path, consumer_batch: int | None) -> Stack:
    prefix = unique("bench-saga") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    if any(t.partitions != PARTITIONS for t in catalogue.topics.values()):
        raise SagaBenchError(f"the saga's topics no longer all have {PARTITIONS} partitions")
    await apply_topics(bootstrap, list(catalogue.topics.values()))
    # The analytics service observes the saga but takes no step in it: left out, so the
    # figures are the saga's own (3.7 CPU-seconds per 1000 sagas in one measured run).
    manifest = [s for s in load_manifest() if s.name not in OBSERVERS]
    specs = [
        ProcessSpec(s.name, s.module, port)
        for s, port in zip(manifest, free_ports(len(manifest)), strict=True)
    ]
    env = {"TOPIC_PREFIX": prefix}
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


async def saga_target(stack: Stack) -> Target:
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
        name="saga",
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


async def run(
    bootstrap: str,
    *,
    workdir: Path,
    orders: int = DEFAULT_ORDERS,
    rate: float = DEFAULT_RATE,
    seconds: float = DEFAULT_SECONDS,
    consumer_batch: int | None = None,
    try_batches: Sequence[int] = (),
    warmup: int = DEFAULT_WARMUP,
    broker_pid: int | None = None,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Every measurement of this module; the dict is what ``--json`` prints."""
    started = time.perf_counter()
    await wait_for_group_coordinator(bootstrap)
    jvm = {"broker (JVM)": broker_pid} if broker_pid is not None else {}
    result: dict[str, Any] = {
        "orders": orders,
        "warmup": warmup,
        "rate": rate,
        "seconds": seconds,
        "consumer_batch": consumer_batch,
        "targets": {"sagas_per_s": TARGET_SAGAS_S, "p99_ms": TARGET_P99_MS},
    }

    # -- the saga
    progress(f"starting the five services (CONSUMER_BATCH={consumer_batch or 'default'})")
    stack = await start_stack(bootstrap, workdir, consumer_batch)
    target: Target | None = None
    try:
        target = await saga_target(stack)
        probe = CpuProbe(target.pids, jvm)
        progress(f"saga: warm-up, {warmup} orders")
        await warm_up(bootstrap, target, warmup)
        saga_tp = await throughput(bootstrap, target, orders, probe, progress)
        expected = warmup + orders
        completed = await completed_count(stack)
        if completed != expected:
            raise SagaBenchError(f"orders-summary: {completed} COMPLETED, expected {expected}")
        saga_rate = await fixed_rate(bootstrap, target, rate, seconds, probe, progress)
        expected += saga_rate["n"]
        completed = await completed_count(stack)
        if completed != expected:
            raise SagaBenchError(f"orders-summary: {completed} COMPLETED, expected {expected}")
        saga_tp["checked_completed"] = completed
    finally:
        if target is not None:
            await target.watch.close()
        progress("stopping the services")
        await stop_stack(stack)
    result["saga"] = {"throughput": saga_tp, "fixed_rate": saga_rate}

    # -- the raw pipe, values sized as the saga's events at each step
    sizes = {s["step"]: s["value_bytes"] for s in saga_tp["stages"]["steps"]}
    value_sizes = [sizes.get(et, 0) for et, _, _ in SAGA_STEPS[1 : HOPS + 1]]
    progress(f"starting the raw pipe: {HOPS} hop processes over {HOPS + 1} topics")
    pipe = await start_pipe(bootstrap, value_sizes)
    raw: Target | None = None
    try:
        raw = await raw_target(bootstrap, pipe)
        probe = CpuProbe(raw.pids, jvm)
        await warm_up(bootstrap, raw, warmup)
        raw_tp = await throughput(bootstrap, raw, orders, probe, progress)
        raw_rate = await fixed_rate(bootstrap, raw, rate, seconds, probe, progress)
    finally:
        if raw is not None:
            await raw.watch.close()
        await stop_pipe(pipe)
    result["raw"] = {"throughput": raw_tp, "fixed_rate": raw_rate, "value_sizes": value_sizes}

    # -- CONSUMER_BATCH variants: throughput only, a fresh stack each
    variants = []
    for batch in try_batches:
        progress(f"variant: CONSUMER_BATCH={batch}")
        vstack = await start_stack(bootstrap, workdir, batch)
        vtarget: Target | None = None
        try:
            vtarget = await saga_target(vstack)
            probe = CpuProbe(vtarget.pids, jvm)
            await warm_up(bootstrap, vtarget, warmup)
            vtp = await throughput(bootstrap, vtarget, orders, probe, progress)
        finally:
            if vtarget is not None:
                await vtarget.watch.close()
            await stop_stack(vstack)
        variants.append(
            {
                "consumer_batch": batch,
                "per_s": vtp["per_s"],
                "latency_ms": vtp["latency_ms"],
                "cpu_all_work": vtp["cpu_all_work"],
                "cpu_timed": vtp["cpu_timed"],
                "stages": vtp["stages"],
            }
        )
    result["consumer_batch_variants"] = variants

    saga_per_s = saga_tp["per_s"]
    p99 = saga_rate["latency_ms"]["p99"]
    result["ratio"] = round(saga_per_s / raw_tp["per_s"], 4)
    result["latency_ratio_p50"] = round(
        saga_rate["latency_ms"]["p50"] / raw_rate["latency_ms"]["p50"], 2
    )
    result["pass_throughput"] = saga_per_s >= TARGET_SAGAS_S
    result["pass_latency"] = p99 <= TARGET_P99_MS
    result["passed"] = result["pass_throughput"] and result["pass_latency"]
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------- output


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        indent
        + "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(res: dict[str, Any]) -> str:
    s_tp, s_rate = res["saga"]["throughput"], res["saga"]["fixed_rate"]
    r_tp, r_rate = res["raw"]["throughput"], res["raw"]["fixed_rate"]
    cores = s_tp["cpu_timed"]["cores_available"]
    lines = [
        f"choreo saga benchmark: 5 services + broker on {cores} cores; after a "
        f"{res['warmup']:,}-order warm-up, {res['orders']:,} orders "
        f"at once, then {res['rate']:g} orders/s for {res['seconds']:g}s; "
        f"CONSUMER_BATCH={res['consumer_batch'] or 'default'}; whole run {res['elapsed_s']:.0f}s",
        "",
    ]
    s_l, r_l = s_rate["latency_ms"], r_rate["latency_ms"]
    rows = [
        (
            "throughput",
            f"{s_tp['per_s']:,.0f} sagas/s",
            f"{r_tp['per_s']:,.0f} msgs/s",
            f"{100 * res['ratio']:.1f}%",
            f">= {TARGET_SAGAS_S:,.0f} sagas/s",
            _verdict(res["pass_throughput"]),
        ),
        (f"latency p50 @{res['rate']:g}/s", f"{s_l['p50']:.0f} ms", f"{r_l['p50']:.0f} ms",
         f"x{res['latency_ratio_p50']:.1f}", "", ""),
        (f"latency p95 @{res['rate']:g}/s", f"{s_l['p95']:.0f} ms", f"{r_l['p95']:.0f} ms",
         "", "", ""),
        (f"latency p99 @{res['rate']:g}/s", f"{s_l['p99']:.0f} ms", f"{r_l['p99']:.0f} ms",
         "", f"<= {TARGET_P99_MS:.0f} ms", _verdict(res["pass_latency"])),
        (f"latency max @{res['rate']:g}/s", f"{s_l['max']:.0f} ms", f"{r_l['max']:.0f} ms",
         "", "", ""),
    ]  # fmt: skip
    lines += _table(("", "saga (6 hops)", "raw pipe (6 topics)", "ratio", "target", "result"), rows)
    st, rt = s_tp["latency_ms"], r_tp["latency_ms"]
    lines += [
        "",
        f"throughput run: saga {s_tp['n']:,} in {s_tp['seconds']:.2f}s "
        f"(latency p50 {st['p50']:.0f} ms, p99 {st['p99']:.0f} ms); "
        f"raw {r_tp['n']:,} in {r_tp['seconds']:.2f}s "
        f"(p50 {rt['p50']:.0f} ms, p99 {rt['p99']:.0f} ms)",
        f"fixed rate: offered {s_rate['achieved_rate']:g}/s (bench loop max lag "
        f"{s_rate['max_schedule_lag_ms']:.0f} ms); the saga completed {s_rate['n']:,} in "
        f"{s_rate['seconds']:.1f}s ({s_rate['completion_rate']:g}/s), the raw pipe in "
        f"{r_rate['seconds']:.1f}s",
        f"orders-summary at the end: {s_tp.get('checked_completed', '?')} COMPLETED, "
        "no other status",
    ]
    if s_rate["completion_rate"] < 0.95 * s_rate["achieved_rate"]:
        lines.append(
            "note: the saga could not keep up with the offered rate, so its latency at that "
            "rate is queueing (it grows with --seconds)"
        )

    def cpu_block(title: str, cpu: dict[str, Any], unit: str) -> None:
        lines.extend(
            [
                "",
                f"{title}: {cpu['wall_s']:.2f}s wall, machine busy "
                f"{cpu['machine_cores_busy']:.2f} of {cpu['cores_available']} cores "
                f"(processes not listed: {cpu['others_cores']:.2f} cores)",
            ]
        )
        rows = [
            (
                p["process"],
                f"{p['cpu_s']:.2f}",
                "-" if p["main_thread_s"] is None else f"{p['main_thread_s']:.2f}",
                "-" if p["other_threads_s"] is None else f"{p['other_threads_s']:.2f}",
                f"{p['cpu_s_per_1000']:.2f}",
                f"{p['cores']:.2f}",
            )
            for p in cpu["processes"]
        ]
        rows.append(("all listed", "", "", "", f"{cpu['total_cpu_s_per_1000']:.2f}", ""))
        header = ("process", "cpu s", "loop thread", "other threads", f"cpu s/1000 {unit}", "cores")
        lines.extend(_table(header, rows, indent="  "))

    cpu_block(
        "CPU, saga throughput run (publish start -> N OrderCompleted)", s_tp["cpu_timed"], "sagas"
    )
    cpu_block(
        "CPU, saga throughput run incl. stragglers (inventory shipping, notifications)",
        s_tp["cpu_all_work"],
        "sagas",
    )
    cpu_block(f"CPU, saga at {res['rate']:g}/s", s_rate["cpu"], "sagas")
    cpu_block("CPU, raw pipe throughput run", r_tp["cpu_timed"], "msgs")

    def stage_block(title: str, block: dict[str, Any], with_span: bool) -> None:
        lines.extend(["", title])
        rows: list[tuple[Any, ...]] = [
            (h["hop"], h.get("p50", "-"), h.get("p99", "-"), h.get("max", "-"))
            for h in block["hops"]
        ]
        lines.extend(_table(("hop (record timestamps)", "p50 ms", "p99 ms", "max ms"), rows, "  "))
        if with_span:
            rows = [
                (
                    s["step"],
                    s["value_bytes"],
                    f"{s.get('first_s', 0):.2f}",
                    f"{s.get('last_s', 0):.2f}",
                    f"{s['rate_per_s'] or 0:,.0f}",
                )
                for s in block["steps"]
            ]
            lines.extend(_table(("step", "bytes", "first s", "last s", "step rate/s"), rows, "  "))

    stage_block("saga throughput run, per step:", s_tp["stages"], True)
    stage_block(f"saga at {res['rate']:g}/s, per hop:", s_rate["stages"], False)
    stage_block("raw pipe throughput run, per step:", r_tp["stages"], True)
    stage_block(f"raw pipe at {res['rate']:g}/s, per hop:", r_rate["stages"], False)

    if res["consumer_batch_variants"]:
        lines += [
            "",
            "CONSUMER_BATCH variants (throughput run on a fresh stack each; cpu s per 1000 sagas "
            "incl. stragglers):",
        ]
        names = ["orders", "inventory", "payments", "shipping", "notifications", "broker (JVM)"]
        runs = [(res["consumer_batch"] or "default (500)", s_tp)]
        runs += [(v["consumer_batch"], v) for v in res["consumer_batch_variants"]]
        vrows: list[tuple[Any, ...]] = []
        for label, v in runs:
            per = {p["process"]: p["cpu_s_per_1000"] for p in v["cpu_all_work"]["processes"]}
            vrows.append(
                (
                    label,
                    f"{v['per_s']:,.0f}",
                    f"{v['latency_ms']['p50']:.0f}",
                    *(f"{per[n]:.2f}" if n in per else "-" for n in names),
                    f"{v['cpu_all_work']['total_cpu_s_per_1000']:.1f}",
                    f"{v['cpu_timed']['others_cores']:.2f}",
                )
            )
        header = ("CONSUMER_BATCH", "sagas/s", "p50 ms", *names, "all", "others' cores")
        lines += _table(header, vrows, "  ")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.saga",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--orders", type=int, default=DEFAULT_ORDERS, metavar="N",
        help=f"orders published at once for the throughput figure (default {DEFAULT_ORDERS})",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, metavar="R",
        help=f"orders/s for the latency figure (default {DEFAULT_RATE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, metavar="S",
        help=f"how long orders are placed at --rate (default {DEFAULT_SECONDS:g})",
    )  # fmt: skip
    parser.add_argument(
        "--consumer-batch", type=int, default=None, metavar="B",
        help="CONSUMER_BATCH for the services (default: the services' own default)",
    )  # fmt: skip
    parser.add_argument(
        "--try-batch", default=DEFAULT_TRY_BATCH, metavar="B[,B...]",
        help="after the main run, the throughput run again with CONSUMER_BATCH=B on a fresh "
        f"stack, for each B (default {DEFAULT_TRY_BATCH or 'none'}; '' for none)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
        help=f"orders through the saga before the timed runs (default {DEFAULT_WARMUP})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        args.try_batch = [int(b) for b in args.try_batch.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--try-batch: comma-separated integers, got {args.try_batch!r}")
    if args.orders < 10:
        parser.error("--orders must be at least 10")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
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
                        orders=args.orders,
                        rate=args.rate,
                        seconds=args.seconds,
                        consumer_batch=args.consumer_batch,
                        try_batches=args.try_batch,
                        warmup=args.warmup,
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
