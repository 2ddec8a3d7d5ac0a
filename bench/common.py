"""What every benchmark shares: the test event, fresh topics and databases, Kafka checks, timing.

The event is the ``Ping`` contract of ``tests/fixtures/schemas`` (the integration tests' event),
with a fixed-size note so that every run sends the same number of bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from events.catalogue import Catalogue, TopicSpec
from events.codec import AvroCodec
from events.db import Database, sqlite_url
from events.envelope import Event
from events.models import EventModel
from events.outbox import UnitOfWork
from events.routing import Router
from events.tables import inbox, outbox
from events.tables import metadata as platform_metadata
from events.topics import apply_topics
from infra.broker import down, private_spec, up

FIXTURE_SCHEMAS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "schemas"
PARTITIONS = 3
AGGREGATES = 200
NOTE = "benchmark payload: one step of a numbered sequence, fixed size...."  # 64 chars
SERVICE = "bench"


class Ping(EventModel):
    aggregate_id: str
    seq: int
    note: str = ""


bench_metadata = MetaData()
applied = Table(
    "bench_applied",
    bench_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("aggregate_id", String, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_id", String, nullable=False),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def aggregates() -> list[str]:
    return [f"order-{uuid.uuid4()}" for _ in range(AGGREGATES)]


def pings(n: int) -> list[Ping]:
    """``n`` pings over ``AGGREGATES`` keys, interleaved, each aggregate's seq increasing."""
    aggs = aggregates()
    return [
        Ping(aggregate_id=aggs[i % AGGREGATES], seq=i // AGGREGATES, note=NOTE) for i in range(n)
    ]


def codec_for(topic: str) -> AvroCodec:
    return AvroCodec(Catalogue.load(FIXTURE_SCHEMAS).retarget({"Ping": topic}, PARTITIONS))


def ping_router(*, noop: bool = False) -> Router:
    """The handler inserts one row per event in the consumer's transaction (or nothing)."""
    router = Router()

    if noop:

        @router.on(Ping)
        async def on_ping_noop(uow: UnitOfWork, event: Event[Ping]) -> None:
            return None

        return router

    @router.on(Ping)
    async def on_ping(uow: UnitOfWork, event: Event[Ping]) -> None:
        # Staged: the batch's rows go in one multi-row INSERT at commit.
        uow.add(
            applied,
            aggregate_id=event.payload.aggregate_id,
            seq=event.payload.seq,
            event_id=event.event_id,
        )

    return router


async def new_database(path: Path) -> Database:
    db = Database(sqlite_url(path))
    await db.create_all(platform_metadata, bench_metadata)
    return db


async def count_rows(db: Database, table: Table) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def count_unsent(db: Database) -> int:
    async with db.session() as s:
        n = await s.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        )
        return int(n.scalar_one())


async def count_inbox(db: Database) -> int:
    return await count_rows(db, inbox)


# --------------------------------------------------------------------------- Kafka


async def new_topic(bootstrap: str, prefix: str, *, dead_letters: bool = False) -> str:
    """A fresh topic with ``PARTITIONS`` partitions, whose leaders are known before return."""
    name = unique(prefix)
    await apply_topics(
        bootstrap, [TopicSpec(name, PARTITIONS, -1, (), {})], dead_letters=dead_letters
    )
    await wait_for_leaders(bootstrap, name)
    return name


async def wait_for_leaders(bootstrap: str, topic: str, deadline_s: float = 30.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                (described,) = await admin.describe_topics([topic])
                parts = described.get("partitions") or []
                if len(parts) == PARTITIONS and all(p["leader"] >= 0 for p in parts):
                    return
                await asyncio.sleep(0.05)  # poll interval; bounded by the timeout above
    finally:
        await admin.close()


async def wait_for_group_coordinator(bootstrap: str, deadline_s: float = 60.0) -> None:
    """A fresh broker creates its offsets topic on the first group lookup; wait for that
    here, untimed, instead of inside whichever run comes first."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                try:
                    await admin.find_coordinator(unique("bench-probe"))
                    return
                except KafkaError:
                    await asyncio.sleep(0.1)  # poll interval; bounded by the timeout above
    finally:
        await admin.close()


def partitions(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    # A group id avoids aiokafka's group-less coordinator, whose stop() can misbehave.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=unique("bench-size"),
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = partitions(topic)
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def topic_size(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


class BenchError(Exception):
    """A run did not do what it claims (missing rows, uncommitted offsets...)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


async def check_committed_to_end(bootstrap: str, group: str, topic: str) -> None:
    ends = await end_offsets(bootstrap, topic)
    committed = await committed_offsets(bootstrap, group)
    for tp, end in ends.items():
        check(committed.get(tp) == end, f"{group}: {tp} committed {committed.get(tp)}, end {end}")


# --------------------------------------------------------------------------- results


def deadline_for(n: int) -> float:
    """A generous bound on one timed span, so a stuck run fails instead of hanging."""
    return 60.0 + n / 200.0


@dataclass(frozen=True)
class Sample:
    """Wall time and CPU seconds at one instant; take it on the event-loop thread."""

    wall: float
    loop_cpu: float  # this (the event-loop) thread
    process_cpu: float  # every thread of this process (aiosqlite's included)

    @staticmethod
    def now() -> Sample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Sample(time.perf_counter(), time.thread_time(), usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class Span:
    seconds: float
    loop_share: float  # event-loop thread CPU / wall
    threads_share: float  # other threads of this process (SQLite's) CPU / wall

    @staticmethod
    def between(start: Sample, end: Sample) -> Span:
        wall = max(end.wall - start.wall, 1e-9)
        loop = end.loop_cpu - start.loop_cpu
        others = max(0.0, end.process_cpu - start.process_cpu - loop)
        return Span(wall, loop / wall, others / wall)


@dataclass
class Series:
    """The timed runs of one variant (the same span each time)."""

    name: str
    label: str
    events: int
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def add(self, span: Span) -> None:
        self.seconds.append(span.seconds)
        self.extra.setdefault("loop thread CPU share", []).append(span.loop_share)
        self.extra.setdefault("other threads CPU share", []).append(span.threads_share)

    def median_extra(self, key: str) -> float | None:
        values = self.extra.get(key)
        return statistics.median(values) if values else None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Events per second at the median time."""
        return self.events / self.median_s

    @property
    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "events": self.events,
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median_s, 4),
            "events_per_s": round(self.rate, 1),
            "extra": {k: [round(x, 4) for x in v] for k, v in self.extra.items()},
        }


@dataclass
class Result:
    """One benchmark: the project's figure against raw aiokafka, plus explanatory variants."""

    name: str
    span: str
    target: float
    project: Series
    raw: Series
    variants: list[Series] = field(default_factory=list)
    breakdown: list[tuple[str, float]] = field(default_factory=list)  # (what, seconds)
    breakdown_total: float | None = None  # what the breakdown's percentages refer to
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.project.rate / self.raw.rate

    @property
    def paired_ratios(self) -> list[float]:
        """project/raw within each round (the two ran back to back, on the same load)."""
        return [p / r for p, r in zip(self.project.rates, self.raw.rates, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "span": self.span,
            "events": self.project.events,
            "project": self.project.to_json(),
            "raw": self.raw.to_json(),
            "ratio": round(self.ratio, 4),
            "paired_ratios": [round(x, 4) for x in self.paired_ratios],
            "target": self.target,
            "result": "PASS" if self.passed else "FAIL",
            "variants": [v.to_json() for v in self.variants],
            "breakdown_s": {what: round(s, 4) for what, s in self.breakdown},
            "notes": self.notes,
        }


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """The variants in a different order on each repeat, so no one always runs first."""
    k %= len(items)
    return [*items[k:], *items[:k]]


@contextlib.contextmanager
def kafka(root: Path, say: Callable[[str], None]) -> Iterator[tuple[str, int | None]]:
    """Bootstrap servers and, for a broker started here, its pid; stops it on exit."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        say(f"using the broker at {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield external, None
        return
    spec = private_spec(root / "kafka")
    say(f"starting a private broker on {spec.bootstrap} in {spec.home}")
    try:
        status = up(spec)
        yield spec.bootstrap, status.pid
    finally:
        say("stopping the private broker")
        down(spec)
