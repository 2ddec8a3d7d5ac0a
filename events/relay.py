"""The outbox relay: publishes committed outbox rows in order, then marks them sent.

A crash between the broker's acknowledgement and the mark re-publishes the rows (the
consumers' inbox makes that harmless); nothing is ever marked sent before it is acked.

A row Kafka refuses for good (too large, not authorised, a topic the catalogue does not
know: see :mod:`events.kafka_errors`) is quarantined: moved to ``choreo_outbox_quarantine``
in the transaction that removes it from the outbox, counted, and logged once; ``choreo
outbox`` lists, re-queues or drops it. A broker refuses a whole batch for one oversized
record, so before quarantining the relay sends the first refused row alone, with a fresh
producer: if it goes through, its batchmates were at fault (or nobody) and the rows are
published again, in order; if it is refused again, the row is the poison.

The later rows of a quarantined row's key are not held back: they flow. Holding a key for
ever is exactly the jam quarantine removes, and an aggregate whose event is missing is
what sagas already watch for (the orders watchdog reports the order stuck, and cancels it
when SAGA_TIMEOUT_ENABLED). Re-queueing puts the row at the end of the outbox, after them.

Health: a monitor beside the publishing loop measures the backlog, the oldest unsent age
and the quarantined rows from the database, whether or not publishing succeeds, and
:meth:`OutboxRelay.stall_reason` says when rows wait and nothing has been published for
longer than a bound (``/ready`` answers 503 with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database, is_transient
from events.envelope import utcnow
from events.kafka import reliable_producer
from events.kafka_errors import TopicNotInCatalogue, describe, is_permanent
from events.metrics import (
    EVENTS_PRODUCED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_QUARANTINED,
    OUTBOX_QUARANTINED_TOTAL,
)
from events.prepared import Prepared
from events.tables import outbox, outbox_quarantine

log = logging.getLogger(__name__)

_MARK_SENT = Prepared(
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(sent_at=bindparam("now"))
)


class _Unsent(NamedTuple):
    """An outbox row to publish, as read on SQLite (PostgreSQL's rows have these fields)."""

    id: int
    topic: str
    key: str
    event_type: str
    payload: bytes
    headers: str


ProducerFactory = Callable[[], AIOKafkaProducer]
AfterPublish = Callable[[Sequence[Any]], Awaitable[None]]


class _NotSent(Exception):
    """A row after one whose send raised: it was not handed to the producer."""


@dataclass
class _Outcome:
    """What became of a batch: rows to mark sent, rows to quarantine (with the refusal),
    and the failure to back off for (transient: the rows not marked are sent again)."""

    sent: list[Any] = field(default_factory=list)
    quarantine: list[tuple[Any, BaseException]] = field(default_factory=list)
    failure: BaseException | None = None
    moved: list[dict[str, Any]] = field(default_factory=list)  # quarantine rows written


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000
    idle_poll_s: float = 1.0  # fallback for rows committed by another process
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    retention: timedelta = timedelta(days=7)
    purge_every_s: float = 60.0
    gauge_every_s: float = 2.0  # backlog, oldest age and quarantine measured this often
    mark_every_s: float = 1.0  # SQLite: acked rows are marked sent at most this often


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bootstrap: str,
        *,
        config: RelayConfig | None = None,
        client_id: str = "choreo-relay",
        producer_factory: ProducerFactory | None = None,
        after_publish: AfterPublish | None = None,
        known_topics: Collection[str] | None = None,
    ) -> None:
        """``known_topics``: the catalogue's topics; a row bound elsewhere is quarantined
        (None: any topic)."""
        self.db = db
        self.config = config or RelayConfig()
        self._factory = producer_factory or (
            lambda: reliable_producer(bootstrap, client_id=client_id)
        )
        self._after_publish = after_publish
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._known_topics = None if known_topics is None else frozenset(known_topics)
        self.published = 0
        self.failures = 0
        self.quarantined = 0
        self._unsent_stmt: Prepared | None = None
        # SQLite: acked rows wait here to be marked sent in one transaction per
        # mark_every_s (not one per batch); rows up to _after are published, so the next
        # select starts after them. A crash before the mark re-publishes them, as a crash
        # before any mark always could.
        self._unmarked: list[int] = []
        self._after = 0
        self._next_mark = 0.0
        # Health: when a batch last went through (monotonic), the last failure, and the
        # monitor's latest measurement of the rows waiting.
        self.last_ok = time.monotonic()
        self.last_error: str | None = None
        self.waiting: int = 0
        self.oldest_age_s: float | None = None

    def notify(self) -> None:
        """A unit of work committed rows: publish without waiting for the poll."""
        self._wake.set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

    async def publish_batch(self) -> int:
        """Publish the oldest unsent rows; return how many left the queue (acknowledged and
        marked sent, or quarantined). Raises the failure to back off for, if any."""
        if self.db.is_sqlite:
            # SQLite has one writer at a time: one relay per database, no claiming needed.
            async with self.db.session() as session:
                params = {"after": self._after}
                rows = [_Unsent(**r) for r in await self._unsent().rows(session, params)]
            outcome = await self._publish(rows)
            if outcome.quarantine or outcome.failure is not None:
                # Rows stay behind (to retry) or leave the outbox: mark what went now and
                # select from the oldest unsent row again (a deleted last row's id is
                # reused by SQLite).
                await self.flush_marks()
                self._after = 0
                if outcome.quarantine:
                    async with self.db.session() as session, session.begin():
                        await self._settle(session, outcome)
                elif outcome.sent:
                    await self._mark_sent([r.id for r in outcome.sent])
            elif outcome.sent:
                self._unmarked.extend(r.id for r in outcome.sent)
                self._after = outcome.sent[-1].id
            if self._unmarked and asyncio.get_running_loop().time() >= self._next_mark:
                await self.flush_marks()
        else:
            # PostgreSQL: rows stay locked (claimed) until they are marked, so a second
            # relay skips them instead of publishing them twice.
            async with self.db.session() as session, session.begin():
                rows = await self._claim(session)
                outcome = await self._publish(rows)
                await self._settle(session, outcome)
        self._account(outcome)
        if outcome.failure is not None:
            raise outcome.failure
        self.last_ok = time.monotonic()
        return len(outcome.sent) + len(outcome.quarantine)

    async def _settle(self, session: AsyncSession, outcome: _Outcome) -> None:
        """Marks the sent rows and moves the quarantined ones aside, in the caller's
        transaction."""
        if outcome.sent:
            await session.execute(
                update(outbox)
                .where(outbox.c.id.in_([r.id for r in outcome.sent]))
                .values(sent_at=utcnow())
            )
        if not outcome.quarantine:
            return
        why = {row.id: exc for row, exc in outcome.quarantine}
        full = (await session.execute(select(outbox).where(outbox.c.id.in_(why)))).mappings()
        now = utcnow()
        moved = [
            {
                **{k: v for k, v in row.items() if k not in ("id", "sent_at")},
                "outbox_id": row["id"],
                "error_type": type(why[row["id"]]).__name__,
                "reason": describe(why[row["id"]]),
                "quarantined_at": now,
            }
            for row in full.all()
        ]
        if moved:
            await session.execute(outbox_quarantine.insert(), moved)
        await session.execute(delete(outbox).where(outbox.c.id.in_(why)))
        outcome.moved = moved

    def _account(self, outcome: _Outcome) -> None:
        """Counts and logs what a committed batch did."""
        for q in outcome.moved:
            log.error(
                "outbox relay: quarantined row %s (event %s, %s, topic %s, key %s): %s; "
                "the rows behind it flow (see `choreo outbox list`)",
                q["outbox_id"],
                q["event_id"],
                q["event_type"],
                q["topic"],
                q["key"],
                q["reason"],
            )
        if outcome.sent:
            self.published += len(outcome.sent)
            for event_type, n in Counter(r.event_type for r in outcome.sent).items():
                EVENTS_PRODUCED.labels(event_type).inc(n)
        for row, exc in outcome.quarantine:
            self.quarantined += 1
            OUTBOX_QUARANTINED_TOTAL.labels(row.event_type, type(exc).__name__).inc()
        if outcome.failure is not None:
            self.last_error = describe(outcome.failure)

    def _unsent(self) -> Prepared:
        if self._unsent_stmt is None:  # built once: it runs after every commit
            after = self._build_unsent().where(outbox.c.id > bindparam("after"))
            self._unsent_stmt = Prepared(after)
        return self._unsent_stmt

    def _build_unsent(self) -> Select[Any]:
        return (
            select(
                outbox.c.id,
                outbox.c.topic,
                outbox.c.key,
                outbox.c.event_type,
                outbox.c.payload,
                outbox.c.headers,
            )
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.id)
            .limit(self.config.batch_size)
        )

    async def _claim(self, session: AsyncSession) -> list[Any]:
        """Locks unsent rows (skipping rows another relay holds) and keeps, per key, only
        the run that starts at the key's oldest unsent row and has no foreign row inside:
        so two relays never reorder one aggregate's events."""
        claim = self._build_unsent().with_for_update(skip_locked=True)
        rows = (await session.execute(claim)).all()
        if not rows:
            return []
        mine = {r.id for r in rows}
        keys = {r.key for r in rows}
        unsent = (
            await session.execute(
                select(outbox.c.key, outbox.c.id)
                .where(
                    outbox.c.sent_at.is_(None),
                    outbox.c.key.in_(keys),
                    outbox.c.id <= max(mine),
                )
                .order_by(outbox.c.id)
            )
        ).all()
        blocked: set[str] = set()
        allowed: set[int] = set()
        for key, row_id in unsent:
            if key in blocked:
                continue
            if row_id in mine:
                allowed.add(row_id)
            else:
                blocked.add(key)  # another relay holds an earlier row of this key
        return [r for r in rows if r.id in allowed]

    async def _publish(self, rows: Sequence[Any]) -> _Outcome:
        """Sends rows in order and waits for every ack. A row is marked sent only when it
        and every earlier row of its key in the batch were acked (one key, one partition:
        the rest are sent again, in order). The first refused row, when the refusal is
        permanent, is sent alone to learn whether it is the poison."""
        outcome = _Outcome()
        if not rows:
            return outcome
        producer = await self._ensure_producer()
        futures: list[Awaitable[Any]] = []
        results: list[BaseException | None] = []
        for i, row in enumerate(rows):
            if self._known_topics is not None and row.topic not in self._known_topics:
                # Never sent, so it holds no later row of its key back.
                unknown = TopicNotInCatalogue(f"topic {row.topic!r} is not in the catalogue")
                outcome.quarantine.append((row, unknown))
                results.append(_NotSent())
                continue
            try:
                futures.append(await self._send(producer, row))
                results.append(None)
            except (KafkaError, OSError, TimeoutError) as exc:
                # aiokafka refuses some records before sending (larger than its request
                # size, no metadata for the topic): the rows after it wait for the next try.
                results.append(exc)
                results.extend(_NotSent() for _ in rows[i + 1 :])
                break
        acks = iter(await asyncio.gather(*futures, return_exceptions=True))
        # Each sent row's slot gets its ack (metadata) or the exception that failed it.
        results = [next(acks) if r is None else r for r in results]
        skipped = {id(row) for row, _ in outcome.quarantine}
        failed_keys: set[str] = set()
        first: tuple[Any, BaseException] | None = None
        for row, result in zip(rows, results, strict=True):
            if id(row) in skipped:
                continue
            if isinstance(result, BaseException):
                failed_keys.add(row.key)
                first = first or (row, result)
            elif row.key not in failed_keys:
                outcome.sent.append(row)
        if first is not None:
            row, refusal = first
            if not is_permanent(refusal):
                outcome.failure = refusal
            else:
                await self.close()  # the failed batch spent sequence numbers: start afresh
                try:
                    await self._send_alone(row)
                    outcome.sent.append(row)
                except (KafkaError, OSError, TimeoutError) as again:
                    await self.close()
                    if is_permanent(again):
                        outcome.quarantine.append((row, again))
                    else:
                        outcome.failure = again
        if self._after_publish is not None:
            await self._after_publish(outcome.sent)
        return outcome

    async def _send(self, producer: AIOKafkaProducer, row: Any) -> Awaitable[Any]:
        headers = [(k, v.encode()) for k, v in json.loads(row.headers).items()]
        future: Awaitable[Any] = await producer.send(
            row.topic, row.payload, key=row.key.encode(), headers=headers
        )
        return future

    async def _send_alone(self, row: Any) -> None:
        producer = await self._ensure_producer()
        await (await self._send(producer, row))

    async def _mark_sent(self, ids: list[int]) -> None:
        async with self.db.session() as session, session.begin():
            await _MARK_SENT.run(session, {"ids": ids, "now": utcnow()})

    async def flush_marks(self) -> None:
        """Marks sent the acked rows still waiting for it (SQLite), in one transaction."""
        ids, self._unmarked = self._unmarked, []
        if not ids:
            return
        self._next_mark = asyncio.get_running_loop().time() + self.config.mark_every_s
        try:
            await self._mark_sent(ids)
        except BaseException:
            self._unmarked[:0] = ids  # marked by the next flush
            raise

    async def purge(self) -> int:
        cutoff = utcnow() - self.config.retention
        async with self.db.session() as session, session.begin():
            result = await session.execute(delete(outbox).where(outbox.c.sent_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)

    async def backlog(self) -> tuple[int, float | None]:
        """Unsent rows and the age in seconds of the oldest one."""
        async with self.db.session() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                )
            ).one()
        if oldest is None:
            return int(count), None
        if oldest.tzinfo is None:  # SQLite returns naive datetimes
            oldest = oldest.replace(tzinfo=utcnow().tzinfo)
        return int(count), (utcnow() - oldest).total_seconds()

    async def quarantine_size(self) -> int:
        async with self.db.session() as session:
            n = (
                await session.execute(select(func.count()).select_from(outbox_quarantine))
            ).scalar_one()
        return int(n)

    async def refresh_gauges(self) -> None:
        """Measures the backlog, the oldest unsent age and the quarantine in the database
        (so the figures survive a restart and do not depend on publishing succeeding)."""
        await self.flush_marks()  # rows acked but not yet marked are not waiting
        count, age = await self.backlog()
        quarantined = await self.quarantine_size()
        self.waiting, self.oldest_age_s = count, age
        OUTBOX_BACKLOG.set(count)
        OUTBOX_OLDEST_AGE.set(age or 0.0)
        OUTBOX_QUARANTINED.set(quarantined)

    def stall_reason(self, bound_s: float) -> str | None:
        """Why the relay is not keeping up, or None: rows wait (as last measured) and no
        batch has gone through for longer than ``bound_s``."""
        idle = time.monotonic() - self.last_ok
        if self.waiting == 0 or idle <= bound_s:
            return None
        error = f"; last error: {self.last_error}" if self.last_error else ""
        return (
            f"outbox relay has published nothing for {idle:.0f}s while "
            f"{self.waiting} row(s) wait{error}"
        )

    async def _monitor(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_gauges()
            except Exception as exc:  # a measurement must never stop the relay
                log.debug("outbox relay: cannot measure the backlog (%s)", exc)
            await _wait_any(stop, None, self.config.gauge_every_s)

    async def drain(self) -> int:
        """Publish until nothing is unsent (graceful shutdown, tests, tools)."""
        total = 0
        while True:
            n = await self.publish_batch()
            total += n
            if n == 0:
                await self.flush_marks()
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, then flush what is committed and close."""
        backoff = self.config.backoff_initial_s
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        monitor = asyncio.create_task(self._monitor(stop), name="relay-monitor")
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    n = await self.publish_batch()
                    backoff = self.config.backoff_initial_s
                    if loop.time() >= next_purge:
                        await self.flush_marks()
                        await self.purge()
                        self._after = 0  # the purge may delete the last row, whose id recurs
                        next_purge = loop.time() + self.config.purge_every_s
                except (TimeoutError, KafkaError, OSError, DBAPIError) as exc:
                    if isinstance(exc, DBAPIError):
                        if not is_transient(exc):
                            raise
                    else:
                        await self.close()  # a fresh producer after a Kafka failure
                    # Rows published but not marked sent are published again; the
                    # consumers' inbox skips them.
                    self.failures += 1
                    self.last_error = describe(exc)
                    log.warning(
                        "outbox relay: publish failed (%s), retrying in %.1fs", exc, backoff
                    )
                    await _wait_any(stop, None, backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, self.config.backoff_max_s)
                    continue
                if n < self.config.batch_size:
                    idle = self.config.idle_poll_s
                    if self._unmarked:  # come back to mark them
                        idle = min(idle, max(0.0, self._next_mark - loop.time()))
                    await _wait_any(stop, self._wake, idle)
            with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
                await self.drain()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            await self.close()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, limit_s: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
