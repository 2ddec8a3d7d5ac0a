"""Reading back what a phase of the saga benchmark produced (untimed, after the phase): end
offsets, the records between two snapshots, waiting until the groups settled, and the per-hop
latencies and per-step rates those records' timestamps give."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from bench.common import partitions, unique
from bench.saga_watch import header
from events.envelope import H_EVENT_TYPE
from events.kafka import KafkaConnection


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


async def end_offsets(kafka: KafkaConnection, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), group_id=unique("bench-saga-ends"), enable_auto_commit=False
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
    kafka: KafkaConnection, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> list[ConsumerRecord]:
    """Every record between two offset snapshots (untimed, after a phase)."""
    wanted = {tp: end for tp, end in ends.items() if end > starts.get(tp, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
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
    kafka: KafkaConnection, groups: Sequence[str], topics: Sequence[str], deadline_s: float = 60
) -> None:
    """Until every group committed up to the end of what it consumed and nothing new is
    being produced (the stragglers of a phase: inventory shipping, notifications)."""
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        previous: dict[TopicPartition, int] | None = None
        async with asyncio.timeout(deadline_s):
            while True:
                ends = await end_offsets(kafka, topics)
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
        event_type = header(r, H_EVENT_TYPE)
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
