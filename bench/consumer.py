"""Idempotent consumer throughput: EventConsumer against a raw aiokafka consumer loop.

Before the timed runs (untimed): one fresh topic with ``PARTITIONS`` partitions is filled with N
pings, encoded and enveloped exactly as the outbox does, with a raw producer. Every timed run
reads that same topic from the start with a fresh consumer group (and, when it writes, a fresh
SQLite database), so all variants read identical bytes.

Timed spans (client start-up and group join are inside every span, equally):

- project (``full``): ``EventConsumer.run()`` from its start until a batch that brings the
  applied count to N has been applied (the handler inserts one row per event, the inbox row is
  written, both in the batch's transaction), committed in the database and its offsets
  committed in Kafka.
- raw: ``getmany`` with the same fetch options (``manual_consumer``'s settings, the same
  ``timeout_ms``/``max_records`` as EventConsumer's defaults) and the project's own policies:
  every record decoded (``AvroCodec.decode``) and its envelope parsed
  (``Envelope.from_headers``), offsets committed as EventConsumer commits them (in the
  background, at most once per its default ``commit_interval_ms``; the last ones flushed
  before the span ends), until N records were read and committed. (Until issue 15 the raw
  loop waited for a synchronous commit after every fetch and decoded nothing: a baseline
  slower than the project's own policy, which flattered the ratio.)

Variants that tell where the difference goes (the same span, each on a fresh group):

- ``decode``: EventConsumer with ``_apply_batch`` replaced by a counter: Kafka + decoding +
  envelope + pydantic validation + the runtime's bookkeeping, no transaction, no handler call.
- ``noop``: EventConsumer with a handler that does nothing: adds the transaction, the inbox
  dedupe select and insert, and the runtime's per-event dispatch around each handler call
  (whatever instrumentation it carries: spans, log context, metrics).
- ``full`` minus ``noop`` is the handler's own insert.

``run(part, registry=URL)`` does the same on a topic of registry-framed events (the wire
format ``SCHEMA_FORMAT=registry`` writes: ``00`` + 4-byte schema id): the project's codec
reads them through its registry framing (ids resolved once, cached), the raw loop with
fastavro and a writer schema fetched once per id (``bench.raw_decode``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from bench.common import (
    SERVICE,
    applied,
    check,
    check_committed_to_end,
    codec_for,
    count_inbox,
    count_rows,
    new_database,
    new_topic,
    ping_router,
    pings,
    topic_size,
    unique,
    value_decoder,
)
from bench.runs import PartRun, Result, Sample, Series, Span, deadline_for, rotate
from events.consumer import EventConsumer
from events.envelope import Envelope
from events.kafka import KafkaConnection, manual_consumer, reliable_producer
from events.outbox import Outbox

TARGET = 0.30
SPAN = "consumer start -> all N applied, db-committed and offsets committed"
_DEFAULTS = inspect.signature(EventConsumer.__init__).parameters
FETCH_TIMEOUT_MS: int = _DEFAULTS["fetch_timeout_ms"].default
MAX_RECORDS: int = _DEFAULTS["max_batch"].default
COMMIT_INTERVAL_S: float = _DEFAULTS["commit_interval_ms"].default / 1000


class _TimedConsumer(EventConsumer):
    """The unmodified runtime; notes the time when the batch that completes N is committed."""

    def __init__(self, *, target: int, skip_db: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.skip_db = skip_db
        self.finished: Sample | None = None

    async def process(
        self, batches: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        await super().process(batches, stop)  # applied, db-committed, offset commit sent
        if self.finished is None and self.stats.applied >= self.target:
            await self.flush_offsets()  # the span ends when the offsets are committed
            self.finished = Sample.now()
            stop.set()

    async def _apply_batch(self, items: list[Any]) -> None:
        if self.skip_db:  # the "decode" variant: everything but the database
            self.stats.applied += len(items)
            return
        await super()._apply_batch(items)


async def fill(
    bootstrap: str, topic: str, n: int, registry: str | None = None
) -> tuple[float, float]:
    """Puts n pings on topic as the relay would (registry-framed with a ``registry`` URL);
    returns mean value and header sizes."""
    box = Outbox(codec_for(topic, registry), SERVICE)
    records = []
    for ping in pings(n):
        row, env = box.row(ping.event_type, ping.to_avro(), key=ping.aggregate_id)
        records.append((row["key"].encode(), row["payload"], env.to_headers()))
    producer = reliable_producer(KafkaConnection(bootstrap), client_id="bench-fill")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers)
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    check(await topic_size(bootstrap, topic) == n, f"{topic} does not hold {n} records")
    value_size = sum(len(v) for _, v, _ in records) / n
    header_size = sum(sum(len(k) + len(v) for k, v in h) for _, _, h in records) / n
    return value_size, header_size


async def time_raw(bootstrap: str, topic: str, n: int, registry: str | None = None) -> Span:
    """The fair raw loop: the runtime's commit policy and its decoding, nothing else (for
    the registry format: fastavro, writer schemas fetched once and cached by id)."""
    decoder = value_decoder(codec_for(topic, registry), registry)
    group = unique("bench-raw")
    consumer = manual_consumer(KafkaConnection(bootstrap), group_id=group, client_id=group)
    read = 0
    try:
        async with asyncio.timeout(deadline_for(n)):
            start = Sample.now()
            consumer.subscribe([topic])
            await consumer.start()
            loop = asyncio.get_running_loop()
            uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
            in_flight: asyncio.Future[None] | None = None
            next_commit = 0.0
            while read < n:
                batches = await consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS
                )
                for tp, records in batches.items():
                    for record in records:  # what the runtime does before any handler
                        decoder.decode(record.value or b"")
                        Envelope.from_headers(record.headers or (), record.key)
                    if records:
                        uncommitted[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
                        read += len(records)
                # As EventConsumer: at most one commit per interval, sent in the background
                # and awaited only before the next one.
                if uncommitted and loop.time() >= next_commit:
                    if in_flight is not None:
                        await in_flight
                    offsets, uncommitted = uncommitted, {}
                    in_flight = asyncio.ensure_future(consumer.commit(offsets))
                    next_commit = loop.time() + COMMIT_INTERVAL_S
            if in_flight is not None:
                await in_flight
            if uncommitted:  # the last offsets are flushed inside the span, as the runtime's
                await consumer.commit(uncommitted)
            span = Span.between(start, Sample.now())
    finally:
        await consumer.stop()
    check(read == n, f"raw consumer read {read}, wanted {n}")
    await check_committed_to_end(bootstrap, group, topic)
    return span


async def time_project(
    bootstrap: str, topic: str, n: int, path: Path, mode: str, registry: str | None = None
) -> Span:
    """mode: "full" (handler inserts a row), "noop" (handler does nothing), "decode" (no db);
    ``registry``: the codec of a ``SCHEMA_FORMAT=registry`` service, ids at that URL."""
    db = await new_database(path)
    codec = codec_for(topic, registry)
    group = unique(f"bench-{mode}")
    consumer = _TimedConsumer(
        target=n,
        skip_db=mode == "decode",
        name=group,
        topics=[topic],
        router=ping_router(noop=mode != "full"),
        db=db,
        codec=codec,
        outbox=Outbox(codec, SERVICE),
        kafka=KafkaConnection(bootstrap),
    )
    try:
        async with asyncio.timeout(deadline_for(n)):
            start = Sample.now()
            await consumer.run(asyncio.Event())  # returns once N are applied and committed
        check(consumer.finished is not None, f"{mode}: consumer stopped before N")
        assert consumer.finished is not None
        span = Span.between(start, consumer.finished)
        stats = consumer.stats
        check(stats.applied == n, f"{mode}: applied {stats.applied}, wanted {n}")
        check(stats.duplicates == 0 and stats.dead_lettered == 0, f"{mode}: {stats}")
        if mode != "decode":
            check(await count_inbox(db) == n, f"{mode}: inbox does not hold {n} rows")
        want_rows = n if mode == "full" else 0
        check(await count_rows(db, applied) == want_rows, f"{mode}: wrong applied row count")
    finally:
        await db.dispose()
    await check_committed_to_end(bootstrap, group, topic)
    return span


async def run(part: PartRun, registry: str | None = None) -> Result:
    """EventConsumer against raw aiokafka; with ``registry`` (a schema registry's URL) on a
    topic of registry-framed events, both sides decoding that (result ``consumer/registry``)."""
    bootstrap, n, workdir, progress = part.bootstrap, part.n, part.workdir, part.progress
    name = "consumer" if registry is None else "consumer/registry"
    stem = name.replace("/", "-")  # file names
    repeat, warmup, profiler = part.repeat, part.warmup, part.profiler
    project = Series("full", "EventConsumer, handler inserts a row (the project's figure)", n)
    decoding = "decode" if registry is None else "fastavro decode (schema by id)"
    raw = Series(
        "raw",
        f"raw aiokafka getmany + {decoding} + envelope, commits every {COMMIT_INTERVAL_S:g} s",
        n,
    )
    decode = Series("decode", "EventConsumer, _apply_batch skipped (no transaction)", n)
    noop = Series("noop", "EventConsumer, no-op handler (transaction, inbox, dispatch)", n)
    counter = 0

    def path(mode: str) -> Path:
        nonlocal counter
        counter += 1
        return workdir / f"{stem}-{mode}-{counter}.db"

    async def one_round(topic: str, size: int, order: int, warm: bool) -> None:
        async def raw_run() -> None:
            s = await time_raw(bootstrap, topic, size, registry)
            if not warm:
                raw.add(s)

        def project_run(series: Series) -> Callable[[], Awaitable[None]]:
            async def go() -> None:
                s = await time_project(
                    bootstrap, topic, size, path(series.name), series.name, registry
                )
                if not warm:
                    series.add(s)

            return go

        runs = [raw_run, project_run(decode), project_run(noop), project_run(project)]
        for fn in rotate(runs, order):
            await fn()

    progress(f"{name}: warm-up ({warmup} events, not counted)")
    warm_topic = await new_topic(bootstrap, "bench-consume-warm", dead_letters=True)
    await fill(bootstrap, warm_topic, warmup, registry)
    await one_round(warm_topic, warmup, 0, warm=True)

    progress(f"{name}: filling a topic with {n} events (not timed)")
    topic = await new_topic(bootstrap, "bench-consume", dead_letters=True)
    value_size, header_size = await fill(bootstrap, topic, n, registry)
    for r in range(repeat):
        progress(f"{name}: run {r + 1}/{repeat} ({n} events x 4 variants)")
        await one_round(topic, n, r, warm=False)

    if profiler is not None:
        progress(f"{name}: profiled runs (not counted)")
        with profiler.profile(f"{stem}-full"):
            await time_project(bootstrap, topic, n, path("profile"), "full", registry)
        with profiler.profile(f"{stem}-raw"):
            await time_raw(bootstrap, topic, n, registry)

    result = Result(name, SPAN, TARGET, project, raw, [decode, noop])
    result.breakdown = [
        ("Kafka fetch, decode, envelope, commits (raw)", raw.median_s),
        ("+ validation, runtime bookkeeping", decode.median_s - raw.median_s),
        ("+ transaction, inbox, per-event dispatch", noop.median_s - decode.median_s),
        ("+ handler's own insert", project.median_s - noop.median_s),
        ("= idempotent consumer total", project.median_s),
    ]
    result.notes.append(
        f"value {value_size:.0f} B, headers {header_size:.0f} B per record; "
        f"{MAX_RECORDS} records per getmany, {FETCH_TIMEOUT_MS} ms fetch timeout for both"
    )
    return result
