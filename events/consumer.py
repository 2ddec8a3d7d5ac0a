"""The idempotent consumer runtime.

For each fetched batch: decode (undecodable bytes go straight to the dead-letter topic),
apply every handled event and record ``(consumer, event_id)`` in ONE transaction, then
commit offsets. A failing batch is re-run one event per transaction with bounded retries;
an event that still fails is dead-lettered and consumption moves on.

Sequenced dead letters: dead-lettering an event that has a key blocks the key for this
consumer and parks the key's later events (events.sequencing, events.parking).

A dependency the handler calls being unavailable (``DependencyUnavailable``, in a batch or
one by one) is not the event's fault: the transaction rolls back, the event's partition is
sought back to it and paused until the dependency's ``retry_after_s``, its later records
wait, its offsets are committed only below it, and the other partitions' records are
applied as usual; nothing is dead-lettered or retried for it (events.pausing). A schema
registry that cannot be asked for the writer schema of an id not seen yet is such a
dependency too (``RegistryUnavailable``): the record's partition waits, nothing is
dead-lettered; an id the registry says does not exist is dead-lettered with that reason.

The parts that stand alone: events.sequencing, events.inbox (the inbox statements),
events.rebalance (the rebalance listener) and events.consumed (the decoded item, the
counters, the retry loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from opentelemetry.trace import use_span

from events import parking
from events.bulk import insert_rows
from events.codec import AvroCodec
from events.consumed import (
    UNDECODABLE,
    ConsumerStats,
    Item,
    is_infrastructure,
    with_retries,
)
from events.db import Database
from events.dlq import send_dead_letter
from events.envelope import Envelope, EnvelopeError, Event, utcnow
from events.inbox import claim_new, processed_among
from events.kafka import KafkaConnection, manual_consumer, reliable_producer, stop_quietly
from events.kafka_auth import refusals, stop_if_refused
from events.logs import bind_event, unbind_event
from events.metrics import (
    CONSUMER_LAG,
    CONSUMER_PAUSED_PARTITIONS,
    DUPLICATES,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
)
from events.outbox import Outbox, UnitOfWork
from events.pausing import DependencyUnavailable, PausedPartitions, Unavailable
from events.rebalance import BatchLock, Hook
from events.routing import RetryPolicy, Router
from events.sequencing import SequencedDeadLetters, blocked_record
from events.tables import inbox
from events.telemetry import process_span, tracing_enabled

log = logging.getLogger(__name__)

T = TypeVar("T")


class EventConsumer(SequencedDeadLetters):
    def __init__(
        self,
        *,
        name: str,
        topics: Sequence[str],
        router: Router,
        db: Database,
        codec: AvroCodec,
        outbox: Outbox,
        kafka: KafkaConnection,
        retry: RetryPolicy | None = None,
        max_batch: int = 500,
        fetch_timeout_ms: int = 200,
        commit_interval_ms: int = 1000,
        after_db_commit: Hook | None = None,
        consumer_options: dict[str, Any] | None = None,
        sequenced: bool = True,
        block_sync_interval_ms: int = 2000,
    ) -> None:
        self.name = name
        self.topics = list(topics)
        self.handlers = router.handlers
        self.lock_ahead = router.lock_ahead
        self._wanted: frozenset[str | None] = frozenset([*self.handlers, None])
        self.db = db
        self.codec = codec
        self.outbox = outbox
        self.connection = kafka
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self.fetch_timeout_ms = fetch_timeout_ms
        self.commit_interval_s = commit_interval_ms / 1000
        self.after_db_commit = after_db_commit
        self.stats = ConsumerStats()
        self.lag: dict[TopicPartition, int] = {}
        self._histograms: dict[str, Any] = {}
        self._consumer_options = consumer_options or {}
        self._listener = BatchLock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._commit: asyncio.Future[None] | None = None
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._next_commit = 0.0
        self._listener.before_revoke = self.flush_offsets
        self.sequenced = sequenced  # sequenced dead letters: see events.sequencing
        self._init_blocks(block_sync_interval_ms)
        self._stop = self._stopping
        # Partitions held back while a dependency of their handler is unavailable.
        self._paused: PausedPartitions[TopicPartition] = PausedPartitions()
        self._listener.after_assign = self._after_assign

    @property
    def kafka(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._listener.assigned)

    @property
    def joined(self) -> bool:
        """In its group since it started, with or without partitions (aiokafka calls the
        listener on every completed join, an empty assignment included)."""
        return self._listener.joined

    async def start(self) -> None:
        """Connects; ``KafkaRefused`` (one line) when Kafka refuses the principal."""
        self._dlq = reliable_producer(self.connection, client_id=f"{self.name}-dlq")
        try:
            async with refusals(self.connection, "write"):
                await self._dlq.start()
        except BaseException:
            await self.close()
            raise
        options = {"client_id": self.name, **self._consumer_options}
        self._listener.joined = False  # a new member: joined when the group says so
        self._consumer = manual_consumer(self.connection, group_id=self.name, **options)
        self._consumer.subscribe(self.topics, listener=self._listener)
        async with refusals(self.connection, "read"):
            await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.flush_offsets()
        clients, self._consumer, self._dlq = (self._consumer, self._dlq), None, None
        await stop_quietly(*clients)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set: the batch in hand is finished and committed."""
        if self._consumer is None:
            await self.start()
        try:
            while not stop.is_set():
                if self._paused:
                    self._resume_due()
                try:
                    batches = await self.kafka.getmany(
                        timeout_ms=self.fetch_timeout_ms, max_records=self.max_batch
                    )
                except KafkaError as exc:  # a READ ACL missing on a topic or the group
                    await stop_if_refused(self.connection, exc, "read")
                    raise
                if not batches:
                    if self._uncommitted or self._sync_due():
                        async with self._listener.lock:
                            if self._sync_due():  # operator releases are acted on here
                                await self._sync_blocks(stop)
                            if self._uncommitted:  # quiet now: commit what is applied
                                await self._send_commit()
                    continue
                async with self._listener.lock:
                    await self.process(batches, stop)
        finally:
            await self.close()

    async def process(
        self, batches: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        self._stop = stop
        if self._sync_due():
            await self._sync_blocks(stop)
        items: list[Item] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        held: list[ConsumerRecord] = []  # records of keys blocked when the batch came
        bad: list[tuple[ConsumerRecord, Exception]] = []
        for tp, records in batches.items():
            if not records:
                continue
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            for record in records:
                if self._blocks and blocked_record(record, self._blocks):
                    held.append(record)
                    continue
                if parking.record_event_type(record) not in self._wanted:
                    # Skipped from its header, before decoding: most records on a shared
                    # topic are other services' business. A record without the header is
                    # decoded (and dead-lettered if it is malformed).
                    self.stats.ignored += 1
                    continue
                try:
                    item = self._decode_raw(record)
                except UNDECODABLE as exc:
                    bad.append((record, exc))
                    continue
                except DependencyUnavailable as exc:
                    # A schema registry id not seen yet while the registry cannot be asked:
                    # the partition waits from this record on; its later records too.
                    self._pause(record, exc)
                    break
                if item is not None:
                    items.append(item)
        if held:
            await self._process_held(held, stop)
        if bad:
            items = await self._process_undecodable(bad, items, stop)
        if items:
            await self._apply_items(items, stop)
        if self._paused:
            for tp in offsets:
                waiting = self._paused.offset(tp)
                if waiting is not None:  # fetched again from there: committed below it only
                    offsets[tp] = OffsetAndMetadata(waiting, "")
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

    async def _apply_items(self, items: list[Item], stop: asyncio.Event) -> None:
        """The batch in one transaction. A dependency unavailable to one event's handler
        pauses that event's partition and the rest goes again without that partition's
        events from it on (each round drops a partition, so this ends); any other failure
        applies the events one by one."""
        while items:
            try:
                await self._apply_batch(items)
                return
            except Unavailable as exc:
                self._pause(exc.record, exc.error)
                items = [i for i in items if not self._held(i.record)]
            except Exception as exc:
                if len(items) > 1 or not is_infrastructure(exc):
                    log.info(
                        "%s: batch of %d failed (%r), applying one by one",
                        self.name,
                        len(items),
                        exc,
                    )
                for item in items:
                    await self._apply_item(item, stop)
                return

    def _held(self, record: ConsumerRecord) -> bool:
        if not self._paused:
            return False
        return self._paused.holds(TopicPartition(record.topic, record.partition), record.offset)

    def _pause(self, record: ConsumerRecord, error: DependencyUnavailable) -> None:
        """Holds ``record``'s partition back from the record on, until the dependency's
        ``retry_after_s``: fetched again from there once resumed."""
        tp = TopicPartition(record.topic, record.partition)
        until = asyncio.get_running_loop().time() + error.retry_after_s
        offset = self._paused.hold(tp, record.offset, until)
        try:
            self.kafka.seek(tp, offset)
            self.kafka.pause(tp)
        except IllegalStateError:  # no longer assigned: its next owner reads it from there
            self._paused.release(tp)
        log.warning(
            "%s: %s[%d] paused at offset %d for %.2fs: %s",
            self.name,
            tp.topic,
            tp.partition,
            offset,
            error.retry_after_s,
            error,
        )
        CONSUMER_PAUSED_PARTITIONS.labels(self.name).set(len(self._paused))

    def _resume_due(self) -> None:
        """Resumes the paused partitions whose time has come: the first event fetched again
        is the dependency's probe."""
        due = self._paused.due(asyncio.get_running_loop().time())
        if not due:
            return
        assigned = self.kafka.assignment()
        mine = [tp for tp in due if tp in assigned]
        if mine:
            self.kafka.resume(*mine)
            names = ", ".join(f"{t.topic}[{t.partition}]" for t in mine)
            log.info("%s: resumed %s", self.name, names)
        CONSUMER_PAUSED_PARTITIONS.labels(self.name).set(len(self._paused))

    @property
    def paused(self) -> set[TopicPartition]:
        """The partitions held back while a dependency is unavailable."""
        return set(self._paused.held)

    def _after_assign(self) -> None:
        # A new assignment's partitions are fresh and unpaused in aiokafka, fetched from the
        # committed offsets (a held partition's: its held record): forget what was held.
        self._paused.clear()
        CONSUMER_PAUSED_PARTITIONS.labels(self.name).set(0)
        self._sync_soon()

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

    async def _decode(self, record: ConsumerRecord) -> Item | None:
        try:
            return self._decode_raw(record)
        except UNDECODABLE as exc:
            await self._dead_letter(record, exc, attempts=0)
            return None
        except DependencyUnavailable as exc:  # the schema registry: not the event's fault
            self._pause(record, exc)
            return None

    def _decode_raw(self, record: ConsumerRecord) -> Item | None:
        """The record as an event for its handler; None when no handler wants its type."""
        decoded = self.codec.decode(record.value or b"")
        envelope = Envelope.from_headers(record.headers or (), record.key, decoded.writer_version)
        if envelope.event_type != decoded.event_type:
            raise EnvelopeError(
                f"headers say {envelope.event_type} but the body is {decoded.event_type}"
            )
        spec = self.handlers.get(decoded.event_type)
        if spec is None:
            self.stats.ignored += 1
            return None
        payload: Any = decoded.payload
        if spec.model is not None:
            payload = spec.model.model_validate(payload)
        event = Event(envelope, payload, record.topic, record.partition, record.offset)
        return Item(record, event, spec)

    async def _apply_batch(self, items: list[Item]) -> None:
        applied: dict[str, int] = {}
        duplicates = 0
        async with UnitOfWork(self.db, self.outbox) as uow:
            rows = []
            now = utcnow()
            ids = [i.event.event_id for i in items]
            session = uow.session
            claimed = None if self.db.is_sqlite else await claim_new(session, self.name, ids, now)
            seen = set() if claimed is not None else await self._seen(session, ids)
            # SQLite's transaction holds the database's write lock: no row locks to order.
            if self.lock_ahead is not None and not self.db.is_sqlite:
                await self.lock_ahead(uow, [i.event for i in items])
            traced = tracing_enabled()
            for item in items:
                event_id = item.event.event_id
                if event_id in seen or (claimed is not None and event_id not in claimed):
                    duplicates += 1
                    continue
                seen.add(event_id)
                uow.cause = item.event.envelope
                try:
                    await self._handle(uow, item, traced)
                except DependencyUnavailable as exc:  # the transaction rolls back
                    raise Unavailable(item.record, exc) from exc
                rows.append(
                    {
                        "consumer": self.name,
                        "event_id": event_id,
                        "outcome": "applied",
                        "processed_at": now,
                    }
                )
                applied[item.spec.event_type] = applied.get(item.spec.event_type, 0) + 1
            if rows and claimed is None:
                await insert_rows(uow.session, inbox, rows)
            await uow.commit()
        self.stats.duplicates += duplicates
        if duplicates:
            DUPLICATES.labels(self.name).inc(duplicates)
        for event_type, n in applied.items():
            EVENTS_CONSUMED.labels(self.name, event_type).inc(n)
            self.stats.applied += n
            self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + n

    async def _handle(self, uow: UnitOfWork, item: Item, traced: bool) -> None:
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
            # The messaging conventions' attributes (events.telemetry.process_span).
            record = item.record
            span = process_span(env, record.topic, record.partition, record.offset, group=self.name)
            with use_span(span, end_on_exit=True):
                await item.spec.fn(uow, item.event)
        finally:
            unbind_event(token)
            self._histogram(env.event_type).observe(time.perf_counter() - started)

    def _histogram(self, event_type: str) -> Any:
        histogram = self._histograms.get(event_type)
        if histogram is None:
            histogram = self._histograms[event_type] = HANDLER_SECONDS.labels(self.name, event_type)
        return histogram

    async def _apply_one(self, item: Item, stop: asyncio.Event) -> None:
        if self._held(item.record):  # after an event of its partition that waits
            return

        async def give_up(exc: Exception, attempts: int) -> None:
            await self._dead_letter(item.record, exc, attempts=attempts)

        async def pause(error: DependencyUnavailable) -> None:
            self._pause(item.record, error)

        what = f"{item.event.event_type} {item.event.event_id}"
        await with_retries(self, lambda: self._apply_batch([item]), give_up, what, stop, pause)

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
        if self.sequenced and record.key is not None and self._blocks_key(record, error):
            # After the letter is acknowledged and before the offset commit: a crash in
            # between re-reads the event, which fails and is dead-lettered again (the same
            # event id: a duplicate letter, never a lost one), then blocks its key.
            await self._until_db(lambda: self._block(record, error))

    async def _seen(self, session: Any, event_ids: list[str]) -> set[str]:
        return await processed_among(session, self.name, event_ids)

    async def _until_db(self, op: Callable[[], Awaitable[T]]) -> T:
        """Runs ``op`` until the database answers: its outage is not the event's fault."""
        delay = 0.05
        while True:
            try:
                return await op()
            except Exception as exc:
                if not is_infrastructure(exc) or self._stop.is_set():
                    raise
                log.warning("%s: database unavailable (%r); retrying", self.name, exc)
                await asyncio.sleep(delay)  # backoff while the database is down
                delay = min(delay * 2, 2.0)
