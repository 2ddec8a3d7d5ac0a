"""Relay throughput: OutboxRelay.drain() against a raw idempotent aiokafka producer.

Before each timed run (untimed): N pings are written through ``UnitOfWork`` in transactions
of ``TX_SIZE`` into a fresh SQLite database, and the rows' (key, payload, headers) are read
back and pre-encoded for the raw producer. Every run writes to its own fresh topic with
``PARTITIONS`` partitions.

Timed spans (client start-up is inside every span, equally):

- project: ``OutboxRelay(db, ...)`` then ``await relay.drain()``, i.e. producer start, every
  row selected, sent, acknowledged by the broker AND marked sent in the database.
- raw: ``reliable_producer(...)`` (the same options: idempotent, acks=all, linger, batch size)
  started, the same N values sent with the same keys and headers, every delivery awaited.
- raw-batched (explains the gap): the raw producer awaiting deliveries every ``batch_size``
  sends, as the relay does, without any database work.

``run(part, registry=URL)`` does the same with the outbox's events in the schema registry
wire format (``SCHEMA_FORMAT=registry``: the Ping's subject registered untimed first); the
relay copies payloads as they are, so only the bytes differ (5-byte header instead of 10).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from bench.common import (
    SERVICE,
    check,
    codec_for,
    count_unsent,
    new_database,
    new_topic,
    pings,
    topic_size,
)
from bench.runs import PartRun, Result, Sample, Series, Span, deadline_for, rotate
from events.db import Database
from events.kafka import KafkaConnection, reliable_producer
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from events.tables import outbox

TX_SIZE = 100
TARGET = 0.50
SPAN = "producer start -> all N acked by the broker and marked sent"
Record = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers
PHASES = ("select", "producer start", "send+ack", "mark sent")


class _PhasedRelay(OutboxRelay):
    """The unmodified relay, with timestamps taken at its phase boundaries (a few
    ``perf_counter`` calls per batch of 2000 rows: no measurable cost)."""

    def __init__(self, db: Database, bootstrap: str) -> None:
        super().__init__(db, KafkaConnection(bootstrap), after_publish=self._acked)
        self.phases = dict.fromkeys(PHASES, 0.0)
        self._t = 0.0

    async def publish_batch(self) -> int:
        self._t = time.perf_counter()
        n = await super().publish_batch()
        if n == 0:  # the final, empty select
            self.phases["select"] += time.perf_counter() - self._t
        return n

    async def _ensure_producer(self) -> AIOKafkaProducer:
        now = time.perf_counter()
        self.phases["select"] += now - self._t
        producer = await super()._ensure_producer()
        self._t = time.perf_counter()
        self.phases["producer start"] += self._t - now
        return producer

    async def _acked(self, rows: Sequence[Any]) -> None:
        now = time.perf_counter()
        self.phases["send+ack"] += now - self._t
        self._t = now

    async def _mark_sent(self, ids: list[int]) -> None:
        await super()._mark_sent(ids)
        self.phases["mark sent"] += time.perf_counter() - self._t


async def prepare(
    bootstrap: str, n: int, path: Path, registry: str | None = None
) -> tuple[Database, str, list[Record]]:
    """A fresh topic, and a fresh database whose outbox holds n committed pings for it
    (registry-framed with a ``registry`` URL)."""
    topic = await new_topic(bootstrap, "bench-relay")
    codec = codec_for(topic, registry)
    box = Outbox(codec, SERVICE)
    db = await new_database(path)
    events = pings(n)
    for start in range(0, n, TX_SIZE):
        async with UnitOfWork(db, box) as uow:
            for ping in events[start : start + TX_SIZE]:
                uow.emit(ping, key=ping.aggregate_id)
            await uow.commit()
    async with db.session() as s:
        rows = (
            await s.execute(
                select(outbox.c.key, outbox.c.payload, outbox.c.headers).order_by(outbox.c.id)
            )
        ).all()
    records = [
        (r.key.encode(), r.payload, [(k, v.encode()) for k, v in json.loads(r.headers).items()])
        for r in rows
    ]
    check(len(records) == n, f"outbox holds {len(records)} rows, wanted {n}")
    return db, topic, records


async def time_relay(
    bootstrap: str, db: Database, topic: str, n: int
) -> tuple[Span, dict[str, float]]:
    relay = _PhasedRelay(db, bootstrap)
    try:
        async with asyncio.timeout(deadline_for(n)):
            start = Sample.now()
            published = await relay.drain()
            span = Span.between(start, Sample.now())
    finally:
        await relay.close()
    check(published == n, f"relay published {published}, wanted {n}")
    check(await count_unsent(db) == 0, "rows left unsent after drain()")
    check(await topic_size(bootstrap, topic) == n, f"{topic} does not hold {n} records")
    return span, relay.phases


async def time_raw(
    bootstrap: str, topic: str, records: list[Record], *, await_every: int | None = None
) -> Span:
    n = len(records)
    producer = reliable_producer(KafkaConnection(bootstrap), client_id="bench-raw")
    try:
        async with asyncio.timeout(deadline_for(n)):
            started = Sample.now()
            await producer.start()
            step = await_every or n
            for first in range(0, n, step):
                futures = [
                    await producer.send(topic, value, key=key, headers=headers)
                    for key, value, headers in records[first : first + step]
                ]
                await asyncio.gather(*futures)
            span = Span.between(started, Sample.now())
    finally:
        await producer.stop()
    check(await topic_size(bootstrap, topic) == n, f"{topic} does not hold {n} records")
    return span


async def run(part: PartRun, registry: str | None = None) -> Result:
    """The relay against raw aiokafka; with ``registry`` (a schema registry's URL) the rows
    hold registry-framed events (result ``relay/registry``)."""
    bootstrap, n, workdir, progress = part.bootstrap, part.n, part.workdir, part.progress
    name = "relay" if registry is None else "relay/registry"
    stem = name.replace("/", "-")  # file names
    repeat, warmup, profiler = part.repeat, part.warmup, part.profiler
    batch_size = RelayConfig().batch_size
    project = Series("relay", "OutboxRelay.drain()", n)
    raw = Series("raw", "raw aiokafka idempotent producer, all sends in flight", n)
    raw_batched = Series(
        "raw-batched", f"raw producer awaiting every {batch_size} sends (no database)", n
    )
    payload_sizes: list[int] = []
    header_sizes: list[int] = []

    async def one_round(size: int, label: str, order: int, warm: bool) -> None:
        db, relay_topic, records = await prepare(
            bootstrap, size, workdir / f"{stem}-{label}.db", registry
        )
        payload_sizes.extend(len(v) for _, v, _ in records)
        header_sizes.extend(sum(len(k) + len(v) for k, v in h) for _, _, h in records)
        raw_topic = await new_topic(bootstrap, "bench-raw")
        batched_topic = await new_topic(bootstrap, "bench-raw-batched")

        async def relay_run() -> None:
            span, phases = await time_relay(bootstrap, db, relay_topic, size)
            if not warm:
                project.add(span)
                for phase, s in phases.items():
                    project.extra.setdefault(phase, []).append(s)

        async def raw_run() -> None:
            span = await time_raw(bootstrap, raw_topic, records)
            if not warm:
                raw.add(span)

        async def batched_run() -> None:
            span = await time_raw(bootstrap, batched_topic, records, await_every=batch_size)
            if not warm:
                raw_batched.add(span)

        runs: list[Callable[[], Awaitable[None]]] = [relay_run, raw_run, batched_run]
        try:
            for fn in rotate(runs, order):
                await fn()
        finally:
            await db.dispose()

    progress(f"{name}: warm-up ({warmup} events, not counted)")
    await one_round(warmup, "warmup", 0, warm=True)
    for r in range(repeat):
        progress(f"{name}: run {r + 1}/{repeat} ({n} events)")
        await one_round(n, str(r), r, warm=False)

    if profiler is not None:
        progress(f"{name}: profiled run (not counted)")
        db, topic, _ = await prepare(bootstrap, n, workdir / f"{stem}-profile.db", registry)
        try:
            with profiler.profile(stem):
                await time_relay(bootstrap, db, topic, n)
        finally:
            await db.dispose()

    result = Result(name, SPAN, TARGET, project, raw, [raw_batched])
    # The phases of the run whose total is the median, so that they add up.
    mid = min(range(len(project.seconds)), key=lambda i: abs(project.seconds[i] - project.median_s))
    phases = {phase: project.extra[phase][mid] for phase in PHASES}
    result.breakdown_total = project.seconds[mid]
    result.breakdown = [
        ("select unsent rows (SELECT ... LIMIT 2000)", phases["select"]),
        ("producer start", phases["producer start"]),
        ("send loop (incl. header JSON) + await acks", phases["send+ack"]),
        ("mark sent (UPDATE ... WHERE id IN)", phases["mark sent"]),
        ("other (drain loop, sessions)", project.seconds[mid] - sum(phases.values())),
        ("= relay total", project.seconds[mid]),
        ("raw: all sends in flight", raw.median_s),
        (f"raw: awaiting every {batch_size} sends", raw_batched.median_s),
    ]
    result.notes.append(
        f"value {sum(payload_sizes) / len(payload_sizes):.0f} B, headers "
        f"{sum(header_sizes) / len(header_sizes):.0f} B per record (identical bytes for both)"
    )
    return result
