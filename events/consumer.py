"""The idempotent consumer runtime.

For each fetched batch: decode (undecodable bytes go straight to the dead-letter topic),
apply every handled event and record ``(consumer, event_id)`` in ONE transaction, then
commit offsets. A failing batch is re-run one event per transaction with bounded retries;
an event that still fails is dead-lettered and consumption moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import ValidationError
from sqlalchemy import bindparam, select

from events.bulk import insert_rows
from events.codec import AvroCodec, CodecError
from events.db import Database, is_transient
from events.dlq import send_dead_letter
from events.envelope import Envelope, EnvelopeError, Event, utcnow
from events.kafka import manual_consumer, reliable_producer
from events.logs import bind_event, unbind_event
from events.metrics import (
    CONSUMER_LAG,
    DUPLICATES,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    RETRIES,
)
from events.outbox import Outbox, UnitOfWork
from events.prepared import Prepared
from events.routing import HandlerSpec, PermanentError, RetryPolicy, Router
from events.tables import inbox
from events.telemetry import handling_span, tracing_enabled

log = logging.getLogger(__name__)

# Built once: constructing a statement per batch costs more CPU than running it.
_PROCESSED = Prepared(
    select(inbox.c.event_id).where(
        inbox.c.consumer == bindparam("consumer"),
        inbox.c.event_id.in_(bindparam("event_ids", expanding=True)),
    )
)

Hook = Callable[[], Awaitable[None]]


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    retries: int = 0
    dead_lettered: int = 0
    batches: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Item:
    record: ConsumerRecord
    event: Event[Any]
    spec: HandlerSpec


class _Lock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in hand to commit, so no partition is lost mid-way."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.assigned: set[TopicPartition] = set()
        self.before_revoke: Hook | None = None

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            if self.before_revoke is not None:
                await self.before_revoke()
            self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned = set(assigned)


class EventConsumer:
    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[str],
        router: Router,
        db: Database,
        codec: AvroCodec,
        outbox: Outbox,
        bootstrap: str,
        retry: RetryPolicy | None = None,
        max_batch: int = 500,
        fetch_timeout_ms: int = 200,
        commit_interval_ms: int = 100,
        after_db_commit: Hook | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.topics = list(topics)
        self.handlers = router.handlers
        self.db = db
        self.codec = codec
        self.outbox = outbox
        self.bootstrap = bootstrap
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self.fetch_timeout_ms = fetch_timeout_ms
        self.commit_interval_s = commit_interval_ms / 1000
        self.after_db_commit = after_db_commit
        self.stats = ConsumerStats()
        self.lag: dict[TopicPartition, int] = {}
        self._histograms: dict[str, Any] = {}
        self._consumer_options = consumer_options or {}
        self._listener = _Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._commit: asyncio.Future[None] | None = None
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._next_commit = 0.0
        self._listener.before_revoke = self.flush_offsets

    @property
    def kafka(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._listener.assigned)

    async def start(self) -> None:
        self._dlq = reliable_producer(self.bootstrap, client_id=f"{self.name}-dlq")
        try:
            await self._dlq.start()
        except BaseException:
            await self.close()
            raise
        options = {"client_id": self.name, **self._consumer_options}
        self._consumer = manual_consumer(self.bootstrap, group_id=self.name, **options)
        self._consumer.subscribe(self.topics, listener=self._listener)
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.flush_offsets()
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
        if self._dlq is not None:
            producer, self._dlq = self._dlq, None
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set: the batch in hand is finished and committed."""
        if self._consumer is None:
            await self.start()
        try:
            while not stop.is_set():
                batches = await self.kafka.getmany(
                    timeout_ms=self.fetch_timeout_ms, max_records=self.max_batch
                )
                if not batches:
                    if self._uncommitted:  # quiet now: commit what is applied
                        async with self._listener.lock:
                            await self._send_commit()
                    continue
                async with self._listener.lock:
                    await self.process(batches, stop)
        finally:
            await self.close()

    async def process(
        self, batches: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        items: list[_Item] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in batches.items():
            if not records:
                continue
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            for record in records:
                item = await self._decode(record)
                if item is not None:
                    items.append(item)
        if items:
            try:
                await self._apply_batch(items)
            except Exception as exc:
                if len(items) > 1 or not _is_infrastructure(exc):
                    log.info(
                        "%s: batch of %d failed (%r), applying one by one",
                        self.name,
                        len(items),
                        exc,
                    )
                for item in items:
                    await self._apply_one(item, stop)
        self.stats.batches += 1
        if self.after_db_commit is not None:
            await self.after_db_commit()
        self._record_lag(offsets)
        # Offsets are committed at most every commit_interval (each commit is a broker
        # request and a write to its offsets log), always after the database commit; a
        # crash re-reads the uncommitted tail, which the inbox skips.
        self._uncommitted.update(offsets)
        if asyncio.get_running_loop().time() >= self._next_commit:
            await self._send_commit()

    async def _send_commit(self) -> None:
        # The offset commit (a broker round trip) overlaps the next batch's work; it is
        # awaited before the next commit, a revocation or close, so commits stay in order.
        await self.settle_commit()
        offsets, self._uncommitted = self._uncommitted, {}
        self._next_commit = asyncio.get_running_loop().time() + self.commit_interval_s
        if offsets:
            self._commit = asyncio.ensure_future(self.kafka.commit(offsets))

    async def flush_offsets(self) -> None:
        """Commit every applied offset now and wait for the broker (revocation, close)."""
        await self._send_commit()
        await self.settle_commit()

    async def settle_commit(self) -> None:
        """Wait for the offset commit in flight, if any."""
        pending, self._commit = self._commit, None
        if pending is None:
            return
        try:
            await pending
        except CommitFailedError as exc:
            # The partitions moved during a rebalance; the next owner re-reads and the
            # inbox makes that harmless.
            log.warning("%s: offset commit failed after rebalance: %s", self.name, exc)

    def _record_lag(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, committed in offsets.items():
            high = self.kafka.highwater(tp)
            if high is not None:
                lag = max(high - committed.offset, 0)
                self.lag[tp] = lag
                CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(lag)

    async def _decode(self, record: ConsumerRecord) -> _Item | None:
        try:
            decoded = self.codec.decode(record.value or b"")
            envelope = Envelope.from_headers(record.headers or (), record.key)
            if envelope.event_type != decoded.event_type:
                raise EnvelopeError(
                    f"header event-type {envelope.event_type} but body is {decoded.event_type}"
                )
            spec = self.handlers.get(decoded.event_type)
            if spec is None:
                self.stats.ignored += 1
                return None
            payload: Any = decoded.payload
            if spec.model is not None:
                payload = spec.model.model_validate(payload)
        except (CodecError, EnvelopeError, ValidationError) as exc:
            await self._dead_letter(record, exc, attempts=0)
            return None
        event = Event(envelope, payload, record.topic, record.partition, record.offset)
        return _Item(record, event, spec)

    async def _apply_batch(self, items: list[_Item]) -> None:
        applied: dict[str, int] = {}
        duplicates = 0
        async with UnitOfWork(self.db, self.outbox) as uow:
            seen = await self._already_processed(uow, [i.event.event_id for i in items])
            rows = []
            now = utcnow()
            traced = tracing_enabled()
            for item in items:
                event_id = item.event.event_id
                if event_id in seen:
                    duplicates += 1
                    continue
                seen.add(event_id)
                uow.cause = item.event.envelope
                await self._handle(uow, item, traced)
                rows.append(
                    {
                        "consumer": self.name,
                        "event_id": event_id,
                        "outcome": "applied",
                        "processed_at": now,
                    }
                )
                applied[item.spec.event_type] = applied.get(item.spec.event_type, 0) + 1
            if rows:
                await insert_rows(uow.session, inbox, rows)
            await uow.commit()
        self.stats.duplicates += duplicates
        if duplicates:
            DUPLICATES.labels(self.name).inc(duplicates)
        for event_type, n in applied.items():
            EVENTS_CONSUMED.labels(self.name, event_type).inc(n)
            self.stats.applied += n
            self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + n

    async def _handle(self, uow: UnitOfWork, item: _Item, traced: bool) -> None:
        env = item.event.envelope
        started = time.perf_counter()
        token = bind_event(
            event_type=env.event_type,
            event_id=env.event_id,
            correlation_id=env.correlation_id,
            traceparent=env.traceparent,
        )
        try:
            if not traced:  # no tracer installed: skip building a no-op span per event
                await item.spec.fn(uow, item.event)
                return
            attributes: dict[str, str | int] = {
                "messaging.system": "kafka",
                "messaging.destination.name": item.record.topic,
                "messaging.kafka.partition": item.record.partition,
                "messaging.kafka.offset": item.record.offset,
                "choreo.consumer": self.name,
                "choreo.event_type": env.event_type,
                "choreo.event_id": env.event_id,
                "choreo.correlation_id": env.correlation_id,
            }
            with handling_span(f"handle {env.event_type}", env.traceparent, attributes):
                await item.spec.fn(uow, item.event)
        finally:
            unbind_event(token)
            self._histogram(env.event_type).observe(time.perf_counter() - started)

    def _histogram(self, event_type: str) -> Any:
        histogram = self._histograms.get(event_type)
        if histogram is None:
            histogram = self._histograms[event_type] = HANDLER_SECONDS.labels(self.name, event_type)
        return histogram

    async def _apply_one(self, item: _Item, stop: asyncio.Event) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._apply_batch([item])
                return
            except PermanentError as exc:
                await self._dead_letter(item.record, exc, attempts=attempt)
                return
            except Exception as exc:
                if _is_infrastructure(exc):
                    # The database, not the event, is at fault: never dead-letter for it.
                    if stop.is_set():
                        raise
                    attempt = min(attempt, self.retry.attempts - 1)
                elif attempt >= self.retry.attempts:
                    await self._dead_letter(item.record, exc, attempts=attempt)
                    return
                self.stats.retries += 1
                RETRIES.labels(self.name).inc()
                log.info(
                    "%s: %s %s failed (attempt %d): %r",
                    self.name,
                    item.event.event_type,
                    item.event.event_id,
                    attempt,
                    exc,
                )
                await asyncio.sleep(self.retry.delay(attempt))  # backoff between retries

    async def _already_processed(self, uow: UnitOfWork, event_ids: list[str]) -> set[str]:
        params = {"consumer": self.name, "event_ids": event_ids}
        return {row["event_id"] for row in await _PROCESSED.rows(uow.session, params)}

    async def _dead_letter(
        self, record: ConsumerRecord, error: BaseException, attempts: int
    ) -> None:
        if self._dlq is None:
            raise RuntimeError("consumer not started")
        log.warning(
            "%s: dead-lettering %s[%d]@%d: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            error,
        )
        await send_dead_letter(
            self._dlq, record, consumer=self.name, error=error, attempts=attempts
        )
        self.stats.dead_lettered += 1


def _is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or is_transient(exc)
