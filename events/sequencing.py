"""Sequenced dead letters, the consumer's side: when a key is blocked, what happens to its
events.

Dead-lettering an event that has a key blocks the key for this consumer, and the key's
later events are parked, in order, instead of applied after a hole (the rows and
statements: events.parking). When the blocking event comes back (``choreo dlq redrive``)
and applies, the parked ones apply after it in the same transaction; ``choreo dlq release``
applies them without it. Other keys flow as before.

``SequencedDeadLetters`` is a part of ``events.consumer.EventConsumer``, kept in a module of
its own because it is a subject of its own (a cache of blocked keys, parking, unblocking);
it works on the consumer's state and calls the consumer's decoding and handling, declared
below for the type checker. About 410 lines, most of them the one transaction that
unblocks a key (``_drain``), which reads best whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from events import parking
from events.bulk import insert_rows
from events.consumed import (
    UNDECODABLE,
    ConsumerStats,
    Item,
    ParkedFailure,
    is_infrastructure,
    reason,
    with_retries,
)
from events.db import Database
from events.dlq import send_dead_letter
from events.envelope import utcnow
from events.metrics import BLOCKED_KEYS, EVENTS_CONSUMED, PARKED_EVENTS
from events.outbox import Outbox, UnitOfWork
from events.pausing import DependencyUnavailable
from events.routing import HandlerSpec, PermanentError, RetryPolicy
from events.tables import inbox
from events.telemetry import tracing_enabled

log = logging.getLogger(__name__)

T = TypeVar("T")


def blocked_record(record: ConsumerRecord, blocks: dict[str, str]) -> bool:
    return record.key is not None and parking.key_text(record.key) in blocks


class SequencedDeadLetters:
    """The blocked keys of one consumer, cached (loaded before the first batch, kept in step
    by this consumer's own blocks and unblocks, re-read every ``block_sync_interval`` and
    after each assignment) so that a batch costs no query at all while nothing is blocked,
    the usual case; only a batch holding a cached key asks the database."""

    # The consumer's, used here.
    name: str
    db: Database
    outbox: Outbox
    handlers: dict[str, HandlerSpec]
    stats: ConsumerStats
    retry: RetryPolicy
    sequenced: bool
    _dlq: AIOKafkaProducer | None
    _stop: asyncio.Event

    if TYPE_CHECKING:

        def _decode_raw(self, record: ConsumerRecord) -> Item | None: ...

        async def _decode(self, record: ConsumerRecord) -> Item | None: ...

        async def _handle(self, uow: UnitOfWork, item: Item, traced: bool) -> None: ...

        async def _apply_one(self, item: Item, stop: asyncio.Event) -> None: ...

        def _pause(self, record: ConsumerRecord, error: DependencyUnavailable) -> None: ...

        async def _dead_letter(
            self, record: ConsumerRecord, error: BaseException, attempts: int
        ) -> None: ...

        async def _seen(self, session: Any, event_ids: list[str]) -> set[str]: ...

        async def _until_db(self, op: Callable[[], Awaitable[T]]) -> T: ...

    def _init_blocks(self, block_sync_interval_ms: int) -> None:
        self._blocks: dict[str, str] = {}  # key -> id of the dead-lettered event blocking it
        self._blocks_loaded = False
        self._block_sync_s = block_sync_interval_ms / 1000
        self._next_sync = 0.0

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
                if not is_infrastructure(exc):
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
                session, self.name, record, reason=reason(error), now=utcnow()
            )
        self._blocks[parking.key_text(record.key or b"")] = blocking
        self._sync_soon()  # the gauges

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
        self, bad: list[tuple[ConsumerRecord, Exception]], items: list[Item], stop: asyncio.Event
    ) -> list[Item]:
        """Dead-letters undecodable records; the batch's events of their keys are then taken
        one by one in offset order (those after the bad one are parked behind it). Returns
        the items that can still be applied as a batch."""
        keys = {parking.key_text(r.key) for r, _ in bad if r.key is not None}
        if not self.sequenced or not keys:
            for record, exc in bad:
                await self._dead_letter(record, exc, attempts=0)
            return items
        rest: list[Item] = []
        ordered: list[tuple[ConsumerRecord, Item | Exception]] = list(bad)
        for i in items:
            if i.record.key is not None and parking.key_text(i.record.key) in keys:
                ordered.append((i.record, i))
            else:
                rest.append(i)
        ordered.sort(key=lambda x: (x[0].topic, x[0].partition, x[0].offset))
        for record, what in ordered:
            if isinstance(what, Item):
                await self._apply_item(what, stop)
            elif blocked_record(record, self._blocks):
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

    async def _apply_item(self, item: Item, stop: asyncio.Event) -> None:
        if self._blocks and blocked_record(item.record, self._blocks):
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
        item: Item | None = None
        if head is not None:
            try:
                item = self._decode_raw(head)
            except UNDECODABLE as exc:
                await self._dead_letter(head, exc, attempts=0)
                return
            except DependencyUnavailable as exc:  # the schema registry: the head waits
                self._pause(head, exc)
                return

        async def attempt_once() -> None:
            claimed = await self._drain(key, head, item, None)
            if not claimed and item is not None:  # unblocked meanwhile: apply as usual
                await self._apply_one(item, stop)

        async def give_up(exc: Exception, attempts: int) -> None:
            if isinstance(exc, ParkedFailure):
                await self._dead_letter_parked(key, head, item, exc)
            elif head is None:
                if isinstance(exc, PermanentError):  # only the head raises it unwrapped
                    raise exc
                # The release stays requested: tried again at the next sync.
                log.error("%s: releasing key %s failed: %r", self.name, key, exc)
            else:
                await self._dead_letter(head, exc, attempts=attempts)

        await with_retries(self, attempt_once, give_up, f"unblocking key {key}", stop)

    async def _dead_letter_parked(
        self, key: str, head: ConsumerRecord | None, item: Item | None, failure: ParkedFailure
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
        item: Item | None,
        failure: ParkedFailure | None,
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
                    raise ParkedFailure(index, record, exc) from exc
                done.append(parked.event.event_id)
                applied[parked.spec.event_type] = applied.get(parked.spec.event_type, 0) + 1
            await parking.mark_inbox(uow.session, self.name, done, "applied", now)
            await parking.mark_inbox(uow.session, self.name, ignored, "ignored", now)
            new_block: str | None = None
            if failure is not None:
                await parking.unpark(uow.session, self.name, key, rows[limit]["seq"])
                await parking.forget_inbox(uow.session, self.name, rows[limit]["event_id"])
                new_block = await parking.block(
                    uow.session, self.name, failure.record, reason=reason(failure.error), now=now
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
