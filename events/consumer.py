"""The idempotent consumer runtime.

For each fetched batch: decode (undecodable bytes go straight to the dead-letter topic),
apply every handled event and record ``(consumer, event_id)`` in ONE transaction, then
commit offsets. A failing batch is re-run one event per transaction with bounded retries;
an event that still fails is dead-lettered and consumption moves on.

Sequenced dead letters (events.parking): dead-lettering an event that has a key blocks the
key for this consumer, and the key's later events are parked, in order, instead of applied
after a hole. When the blocking event comes back (``choreo dlq redrive``) and applies, the
parked ones apply after it in the same transaction; ``choreo dlq release`` applies them
without it. Other keys flow as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from opentelemetry.trace import use_span
from pydantic import ValidationError
from sqlalchemy import ARRAY, DateTime, String, bindparam, select, text

from events import parking
from events.bulk import insert_rows
from events.codec import AvroCodec, CodecError
from events.db import Database, is_transient
from events.dlq import send_dead_letter
from events.envelope import Envelope, EnvelopeError, Event, utcnow
from events.kafka import manual_consumer, reliable_producer
from events.logs import bind_event, unbind_event
from events.metrics import (
    BLOCKED_KEYS,
    CONSUMER_LAG,
    DUPLICATES,
    EVENTS_CONSUMED,
    HANDLER_SECONDS,
    PARKED_EVENTS,
    RETRIES,
)
from events.outbox import Outbox, UnitOfWork
from events.prepared import Prepared
from events.routing import HandlerSpec, PermanentError, RetryPolicy, Router
from events.tables import inbox
from events.telemetry import start_handling_span, tracing_enabled

log = logging.getLogger(__name__)

# Built once: constructing a statement per batch costs more CPU than running it.
_PROCESSED = Prepared(
    select(inbox.c.event_id).where(
        inbox.c.consumer == bindparam("consumer"),
        inbox.c.event_id.in_(bindparam("event_ids", expanding=True)),
    )
)

# PostgreSQL: the batch's inbox rows written first, in one round trip, instead of a select
# before the handlers and an insert after them; the ids it returns are the events not seen
# before (a conflict is a duplicate: skipped, or waited for while another transaction holds
# it). One array parameter, so one prepared statement serves every batch size.
_CLAIM_INBOX_PG = text(
    "INSERT INTO choreo_inbox (consumer, event_id, outcome, processed_at) "
    "SELECT CAST(:consumer AS VARCHAR), e, 'applied', CAST(:now AS TIMESTAMPTZ) "
    "FROM unnest(CAST(:event_ids AS VARCHAR[])) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(
    bindparam("event_ids", type_=ARRAY(String)), bindparam("now", type_=DateTime(timezone=True))
)

Hook = Callable[[], Awaitable[None]]
T = TypeVar("T")


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    retries: int = 0
    dead_lettered: int = 0
    parked: int = 0
    unparked: int = 0
    batches: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Item:
    record: ConsumerRecord
    event: Event[Any]
    spec: HandlerSpec


class _ParkedFailure(Exception):
    """A parked event failed while its key was being unblocked."""

    def __init__(self, index: int, record: ConsumerRecord, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.record = record
        self.error = error


class _Lock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in hand to commit, so no partition is lost mid-way."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.assigned: set[TopicPartition] = set()
        self.before_revoke: Hook | None = None
        self.after_assign: Callable[[], None] | None = None

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            if self.before_revoke is not None:
                await self.before_revoke()
            self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned = set(assigned)
        if self.after_assign is not None:
            self.after_assign()


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
        commit_interval_ms: int = 1000,
        after_db_commit: Hook | None = None,
        consumer_options: dict[str, Any] | None = None,
        sequenced: bool = True,
        block_sync_interval_ms: int = 2000,
    ) -> None:
        self.name = name
        self.topics = list(topics)
        self.handlers = router.handlers
        self._wanted: frozenset[str | None] = frozenset([*self.handlers, None])
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
        # Sequenced dead letters. The blocked keys are cached (loaded before the first batch,
        # kept in step by this consumer's own blocks and unblocks, re-read every
        # block_sync_interval and after each assignment) so that a batch costs no query at
        # all while nothing is blocked, the usual case; only a batch holding a cached key
        # asks the database.
        self.sequenced = sequenced
        self._blocks: dict[str, str] = {}  # key -> id of the dead-lettered event blocking it
        self._blocks_loaded = False
        self._block_sync_s = block_sync_interval_ms / 1000
        self._next_sync = 0.0
        self._stop: asyncio.Event = self._stopping
        self._listener.after_assign = self._sync_soon

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
        items: list[_Item] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        held: list[ConsumerRecord] = []  # records of keys blocked when the batch came
        bad: list[tuple[ConsumerRecord, Exception]] = []
        for tp, records in batches.items():
            if not records:
                continue
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            for record in records:
                if self._blocks and _blocked_record(record, self._blocks):
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
                except (CodecError, EnvelopeError, ValidationError) as exc:
                    bad.append((record, exc))
                    continue
                if item is not None:
                    items.append(item)
        if held:
            await self._process_held(held, stop)
        if bad:
            items = await self._process_undecodable(bad, items, stop)
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
                    await self._apply_item(item, stop)
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
            return self._decode_raw(record)
        except (CodecError, EnvelopeError, ValidationError) as exc:
            await self._dead_letter(record, exc, attempts=0)
            return None

    def _decode_raw(self, record: ConsumerRecord) -> _Item | None:
        """The record as an event for its handler; None when no handler wants its type."""
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
        event = Event(envelope, payload, record.topic, record.partition, record.offset)
        return _Item(record, event, spec)

    async def _apply_batch(self, items: list[_Item]) -> None:
        applied: dict[str, int] = {}
        duplicates = 0
        async with UnitOfWork(self.db, self.outbox) as uow:
            rows = []
            now = utcnow()
            ids = [i.event.event_id for i in items]
            claimed = None if self.db.is_sqlite else await self._claim_inbox(uow, ids, now)
            seen = set() if claimed is not None else await self._already_processed(uow, ids)
            traced = tracing_enabled()
            for item in items:
                event_id = item.event.event_id
                if event_id in seen or (claimed is not None and event_id not in claimed):
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
            # Few attributes: each is validated twice as the span starts and encoded in the
            # exporter's thread, for every event. Left out: the correlation id (on the
            # event's log lines; the trace is the saga), the partition and offset (the
            # event id names the event).
            attributes: dict[str, str | int] = {
                "messaging.system": "kafka",
                "messaging.destination.name": item.record.topic,
                "choreo.consumer": self.name,
                "choreo.event_type": env.event_type,
                "choreo.event_id": env.event_id,
            }
            span = start_handling_span(f"handle {env.event_type}", env.traceparent, attributes)
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

    async def _claim_inbox(self, uow: UnitOfWork, event_ids: list[str], now: Any) -> set[str]:
        """PostgreSQL: records the batch's events in the inbox; returns those new to it."""
        params = {"consumer": self.name, "event_ids": list(dict.fromkeys(event_ids)), "now": now}
        return set((await uow.session.execute(_CLAIM_INBOX_PG, params)).scalars())

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
        if self.sequenced and record.key is not None and self._blocks_key(record, error):
            # After the letter is acknowledged and before the offset commit: a crash in
            # between re-reads the event, which fails and is dead-lettered again (the same
            # event id: a duplicate letter, never a lost one), then blocks its key.
            await self._until_db(lambda: self._block(record, error))

    def _blocks_key(self, record: ConsumerRecord, error: BaseException) -> bool:
        """Whether dead-lettering ``record`` for ``error`` holds its key's later events: not
        for a refusal, nor for a type whose handler says its events stand alone."""
        if not getattr(error, "blocks_key", True):
            return False
        spec = self.handlers.get(parking.record_event_type(record) or "")
        return spec is None or spec.sequenced

    async def _block(self, record: ConsumerRecord, error: BaseException) -> None:
        async with self.db.session() as session, session.begin():
            blocking = await parking.block(
                session, self.name, record, reason=_reason(error), now=utcnow()
            )
        self._blocks[parking.key_text(record.key or b"")] = blocking
        self._sync_soon()  # the gauges

    # --- sequenced dead letters --------------------------------------------------------

    def _sync_soon(self) -> None:
        self._next_sync = 0.0

    def _sync_due(self) -> bool:
        return self.sequenced and asyncio.get_running_loop().time() >= self._next_sync

    async def _sync_blocks(self, stop: asyncio.Event) -> None:
        """Re-reads this consumer's blocked keys (another instance of the group may have
        blocked one), sets the gauges from the database, and acts on operator releases."""

        async def read() -> list[parking.BlockedKey]:
            async with self.db.session() as session:
                return await parking.blocks(session, self.name)

        if not self._blocks_loaded:
            # Never consume with an unknown set of blocked keys (that could apply a blocked
            # key's events out of order): wait for the database.
            self._stop = stop
            found = await self._until_db(read)
        else:
            try:
                found = await read()
            except Exception as exc:
                if not _is_infrastructure(exc):
                    raise
                log.warning("%s: cannot refresh blocked keys: %r", self.name, exc)
                self._next_sync = asyncio.get_running_loop().time() + self._block_sync_s
                return
        self._blocks = {b.key: b.event_id for b in found}
        self._blocks_loaded = True
        BLOCKED_KEYS.labels(self.name).set(len(found))
        PARKED_EVENTS.labels(self.name).set(sum(b.parked for b in found))
        self._next_sync = asyncio.get_running_loop().time() + self._block_sync_s
        released = [b.key for b in found if b.released]
        for key in released:
            log.warning("%s: operator released key %s: applying its parked events", self.name, key)
            await self._unblock(key, None, stop)
        if released:
            self._sync_soon()

    async def _process_held(self, held: list[ConsumerRecord], stop: asyncio.Event) -> None:
        """Records of keys the cache says are blocked: one query learns which still are;
        their records are parked, except the blocking event itself (re-driven), which is
        applied with the ones parked behind it."""
        by_key: dict[str, list[ConsumerRecord]] = {}
        for record in held:
            by_key.setdefault(parking.key_text(record.key), []).append(record)

        async def lookup() -> dict[str, str]:
            async with self.db.session() as session:
                return await parking.blocked_among(session, self.name, by_key)

        blocked = await self._until_db(lookup)
        to_park: list[ConsumerRecord] = []
        heads: list[list[ConsumerRecord]] = []
        free: list[ConsumerRecord] = []
        for key, records in by_key.items():
            blocking = blocked.get(key)
            if blocking is None:
                self._blocks.pop(key, None)
                free.extend(records)
                continue
            self._blocks[key] = blocking
            ids = [parking.record_event_id(r) for r in records]
            if blocking in ids:
                at = ids.index(blocking)
                to_park.extend(records[:at])
                heads.append(records[at:])
            else:
                to_park.extend(records)
        if to_park:
            await self._park(to_park, stop)
        for run in heads:
            for record in run:
                await self._apply_record(record, stop)
        for record in free:
            await self._apply_record(record, stop)

    async def _process_undecodable(
        self, bad: list[tuple[ConsumerRecord, Exception]], items: list[_Item], stop: asyncio.Event
    ) -> list[_Item]:
        """Dead-letters undecodable records; the batch's events of their keys are then taken
        one by one in offset order (those after the bad one are parked behind it). Returns
        the items that can still be applied as a batch."""
        keys = {parking.key_text(r.key) for r, _ in bad if r.key is not None}
        if not self.sequenced or not keys:
            for record, exc in bad:
                await self._dead_letter(record, exc, attempts=0)
            return items
        rest: list[_Item] = []
        ordered: list[tuple[ConsumerRecord, _Item | Exception]] = list(bad)
        for i in items:
            if i.record.key is not None and parking.key_text(i.record.key) in keys:
                ordered.append((i.record, i))
            else:
                rest.append(i)
        ordered.sort(key=lambda x: (x[0].topic, x[0].partition, x[0].offset))
        for record, what in ordered:
            if isinstance(what, _Item):
                await self._apply_item(what, stop)
            elif _blocked_record(record, self._blocks):
                await self._park([record], stop)
            else:
                await self._dead_letter(record, what, attempts=0)
        return rest

    async def _apply_record(self, record: ConsumerRecord, stop: asyncio.Event) -> None:
        """One record on its own, in the order of its key."""
        key = None if record.key is None else parking.key_text(record.key)
        blocking = None if key is None else self._blocks.get(key)
        if blocking is not None and key is not None:
            if parking.record_event_id(record) == blocking:
                await self._unblock(key, record, stop)
            else:
                await self._park([record], stop)
            return
        item = await self._decode(record)
        if item is not None:
            await self._apply_one(item, stop)

    async def _apply_item(self, item: _Item, stop: asyncio.Event) -> None:
        if self._blocks and _blocked_record(item.record, self._blocks):
            await self._apply_record(item.record, stop)  # its key was blocked in this batch
        else:
            await self._apply_one(item, stop)

    async def _park(self, records: list[ConsumerRecord], stop: asyncio.Event) -> None:
        # A type no handler wants would be ignored when applied: no need to keep it.
        wanted = [
            r
            for r in records
            if parking.record_event_type(r) in self.handlers or parking.record_event_type(r) is None
        ]
        self.stats.ignored += len(records) - len(wanted)
        if not wanted:
            return

        async def write() -> int:
            async with self.db.session() as session, session.begin():
                ids = [parking.record_event_id(r) for r in wanted]
                seen = await self._seen(session, ids)
                fresh = []
                for record, event_id in zip(wanted, ids, strict=True):
                    if event_id not in seen:
                        seen.add(event_id)
                        fresh.append(record)
                if fresh:
                    await parking.park(session, self.name, fresh, utcnow())
                return len(fresh)

        parked = await self._until_db(write)
        self.stats.parked += parked
        self.stats.duplicates += len(wanted) - parked
        PARKED_EVENTS.labels(self.name).inc(parked)
        log.info("%s: parked %d event(s) behind dead letters", self.name, parked)

    async def _unblock(self, key: str, head: ConsumerRecord | None, stop: asyncio.Event) -> None:
        """Applies ``head`` (the re-driven blocking event; None when an operator released
        the key) and then the key's parked events, in order, in one transaction, removing
        the block. A parked event that fails for good is dead-lettered and blocks the key in
        its turn (those before it applied, those after it still parked); a head that fails
        for good is dead-lettered again and the key stays blocked."""
        item: _Item | None = None
        if head is not None:
            try:
                item = self._decode_raw(head)
            except (CodecError, EnvelopeError, ValidationError) as exc:
                await self._dead_letter(head, exc, attempts=0)
                return
        attempt = 0
        while True:
            attempt += 1
            try:
                claimed = await self._drain(key, head, item, None)
                if not claimed and item is not None:  # unblocked meanwhile: apply as usual
                    await self._apply_one(item, stop)
                return
            except _ParkedFailure as failure:
                error = failure.error
                if _is_infrastructure(error):
                    if stop.is_set():
                        raise error from None
                    attempt = min(attempt, self.retry.attempts - 1)
                elif (
                    isinstance(error, PermanentError | CodecError | EnvelopeError | ValidationError)
                    or attempt >= self.retry.attempts
                ):
                    await self._dead_letter_parked(key, head, item, failure, stop)
                    return
            except PermanentError as exc:
                if head is None:  # only the head raises it unwrapped
                    raise
                await self._dead_letter(head, exc, attempts=attempt)
                return
            except Exception as exc:
                if _is_infrastructure(exc):
                    if stop.is_set():
                        raise
                    attempt = min(attempt, self.retry.attempts - 1)
                elif attempt >= self.retry.attempts:
                    if head is None:  # the release stays requested: tried again next sync
                        log.error("%s: releasing key %s failed: %r", self.name, key, exc)
                        return
                    await self._dead_letter(head, exc, attempts=attempt)
                    return
            self.stats.retries += 1
            RETRIES.labels(self.name).inc()
            log.info("%s: unblocking key %s failed (attempt %d)", self.name, key, attempt)
            await asyncio.sleep(self.retry.delay(attempt))  # backoff between retries

    async def _dead_letter_parked(
        self,
        key: str,
        head: ConsumerRecord | None,
        item: _Item | None,
        failure: _ParkedFailure,
        stop: asyncio.Event,
    ) -> None:
        if self._dlq is None:
            raise RuntimeError("consumer not started")
        record = failure.record
        log.warning(
            "%s: parked %s[%d]@%d fails for good, it blocks key %s now: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            key,
            failure.error,
        )
        # The letter first, then the transaction that moves the block onto it: a crash in
        # between repeats the letter (same event id), never loses it.
        await send_dead_letter(
            self._dlq, record, consumer=self.name, error=failure.error, attempts=1
        )
        self.stats.dead_lettered += 1

        async def commit_partial() -> None:
            await self._drain(key, head, item, failure)

        await self._until_db(commit_partial)

    async def _drain(
        self,
        key: str,
        head: ConsumerRecord | None,
        item: _Item | None,
        failure: _ParkedFailure | None,
    ) -> bool:
        """One transaction: claim the block, apply the head and the parked events (up to the
        failed one, which then blocks the key), remove what was applied. False when the
        block is not there any more."""
        now = utcnow()
        applied: dict[str, int] = {}
        async with UnitOfWork(self.db, self.outbox) as uow:
            head_id = None if head is None else parking.record_event_id(head)
            released = head is None
            skipped = None
            if released:
                blocking = await parking.blocked_among(uow.session, self.name, [key])
                skipped = blocking.get(key)
            if not await parking.claim(
                uow.session, self.name, key, event_id=head_id, released=released
            ):
                self._blocks.pop(key, None)
                self._sync_soon()
                return False
            traced = tracing_enabled()
            if skipped is not None and not await self._seen(uow.session, [skipped]):
                # The operator skipped it: a later re-drive of its letter is a duplicate,
                # not an event applied out of order.
                row = {"consumer": self.name, "event_id": skipped, "outcome": "released"}
                await insert_rows(uow.session, inbox, [{**row, "processed_at": now}])
            if item is not None and not await self._seen(uow.session, [item.event.event_id]):
                uow.cause = item.event.envelope
                await self._handle(uow, item, traced)
                await insert_rows(
                    uow.session,
                    inbox,
                    [
                        {
                            "consumer": self.name,
                            "event_id": item.event.event_id,
                            "outcome": "applied",
                            "processed_at": now,
                        }
                    ],
                )
                applied[item.spec.event_type] = 1
            rows = await parking.parked_of(uow.session, self.name, key)
            limit = len(rows) if failure is None else failure.index
            done: list[str] = []
            ignored: list[str] = []
            for index, row in enumerate(rows[:limit]):
                record = parking.parked_record(row)
                try:
                    parked = self._decode_raw(record)
                    if parked is None:
                        ignored.append(row["event_id"])
                        continue
                    uow.cause = parked.event.envelope
                    await self._handle(uow, parked, traced)
                except Exception as exc:
                    raise _ParkedFailure(index, record, exc) from exc
                done.append(parked.event.event_id)
                applied[parked.spec.event_type] = applied.get(parked.spec.event_type, 0) + 1
            await parking.mark_inbox(uow.session, self.name, done, "applied", now)
            await parking.mark_inbox(uow.session, self.name, ignored, "ignored", now)
            new_block: str | None = None
            if failure is not None:
                await parking.unpark(uow.session, self.name, key, rows[limit]["seq"])
                await parking.forget_inbox(uow.session, self.name, rows[limit]["event_id"])
                new_block = await parking.block(
                    uow.session, self.name, failure.record, reason=_reason(failure.error), now=now
                )
            elif rows:
                await parking.unpark(uow.session, self.name, key, rows[-1]["seq"])
            await uow.commit()
        if new_block is None:
            self._blocks.pop(key, None)
        else:
            self._blocks[key] = new_block
        self._sync_soon()  # the gauges
        self.stats.unparked += len(done)
        for event_type, n in applied.items():
            EVENTS_CONSUMED.labels(self.name, event_type).inc(n)
            self.stats.applied += n
            self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + n
        log.info("%s: key %s unblocked: %d parked event(s) applied", self.name, key, len(done))
        return True

    async def _seen(self, session: Any, event_ids: list[str]) -> set[str]:
        params = {"consumer": self.name, "event_ids": event_ids}
        return {row["event_id"] for row in await _PROCESSED.rows(session, params)}

    async def _until_db(self, op: Callable[[], Awaitable[T]]) -> T:
        """Runs ``op`` until the database answers: its outage is not the event's fault."""
        delay = 0.05
        while True:
            try:
                return await op()
            except Exception as exc:
                if not _is_infrastructure(exc) or self._stop.is_set():
                    raise
                log.warning("%s: database unavailable (%r); retrying", self.name, exc)
                await asyncio.sleep(delay)  # backoff while the database is down
                delay = min(delay * 2, 2.0)


def _is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or is_transient(exc)


def _blocked_record(record: ConsumerRecord, blocks: dict[str, str]) -> bool:
    return record.key is not None and parking.key_text(record.key) in blocks


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]
