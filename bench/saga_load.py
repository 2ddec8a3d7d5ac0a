"""The saga benchmark's load: where orders go in (``Target``: the saga stack or the raw pipe) and
the phases that offer them: warm-up, a burst at once, a steady rate on a 10 ms schedule, idle,
and the sweep of rates (``bench.sweep``'s rules)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from bench.cpu import CpuProbe, cpu_between
from bench.saga_records import end_offsets, read_range, settle, stage_report, summary_ms
from bench.saga_watch import CompletionWatch, SagaBenchError
from bench.sweep import backlog_limit, capacity, judge, next_rate
from events.codec import AvroCodec
from events.kafka import KafkaConnection, reliable_producer
from events.publisher import Draft, prepare, publish
from services.saga_check import SERVICEABLE, World, order_body, placed_draft

TICK_S = 0.010  # the paced loop's schedule
PRICE_CENTS = 1500
PRODUCER = "bench-saga"
BROKER = "broker (JVM)"
DB_SERVER = "postgres (server + backends)"

Progress = Callable[[str], None]


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
    also_stack: frozenset[str] = frozenset()  # more processes under test (a cluster's nodes)
    _n: int = 0

    @property
    def stack(self) -> frozenset[str]:
        """The processes under test: the target's own and the broker."""
        return frozenset(self.pids) | {BROKER, DB_SERVER} | self.also_stack

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


async def warm_up(kafka: KafkaConnection, target: Target, n: int) -> dict[str, int]:
    """``n`` orders at once, untimed; returns the median value size of each step's events."""
    drafts = target.drafts(n)
    starts = await end_offsets(kafka, target.topics)
    target.watch.expect(_ids(drafts), time.perf_counter())
    await publish(target.codec, kafka, drafts, producer=PRODUCER)
    await _wait_ids(target, _ids(drafts), 120, f"{target.name} warm-up")
    await settle(kafka, target.groups, target.topics)
    ends = await end_offsets(kafka, target.topics)
    records = await read_range(kafka, starts, ends)
    report = stage_report(records, target.stages, set(_ids(drafts)), None)
    return {st["step"]: st["value_bytes"] for st in report["steps"]}


async def _wait_ids(target: Target, ids: Sequence[str], deadline_s: float, what: str) -> float:
    wanted = set(ids)
    done_before = sum(1 for i in target.watch.latency if i not in wanted)
    return await target.watch.wait(done_before + len(ids), deadline_s, what)


async def throughput(
    kafka: KafkaConnection, target: Target, n: int, probe: CpuProbe, progress: Progress
) -> dict[str, Any]:
    drafts = target.drafts(n)
    ids = _ids(drafts)
    starts = await end_offsets(kafka, target.topics)
    progress(f"{target.name}: throughput, {n} orders published at once")
    cpu0 = probe.sample()
    t0 = time.perf_counter()
    t0_wall_ms = time.time() * 1000
    target.watch.expect(ids, t0)
    publisher = asyncio.create_task(publish(target.codec, kafka, drafts, producer=PRODUCER))
    done_at = await _wait_ids(target, ids, 60 + n / 20, f"{target.name} throughput")
    cpu1 = probe.sample()
    published = await publisher
    if len(published) != n:
        raise SagaBenchError(f"published {len(published)} of {n}")
    elapsed = done_at - t0
    await settle(kafka, target.groups, target.topics)
    cpu2 = probe.sample()
    ends = await end_offsets(kafka, target.topics)
    records = await read_range(kafka, starts, ends)
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
    kafka: KafkaConnection,
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
    starts = await end_offsets(kafka, target.topics) if stages else {}
    progress(f"{target.name}: {rate:g} orders/s for {seconds:g}s ({total} orders)")
    producer = reliable_producer(kafka, client_id=f"{PRODUCER}-paced")
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
    await settle(kafka, target.groups, target.topics)
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
        ends = await end_offsets(kafka, target.topics)
        records = await read_range(kafka, starts, ends)
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
    kafka: KafkaConnection,
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
            kafka,
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
