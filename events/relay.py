"""The outbox relay: publishes committed outbox rows in order, then marks them sent.

A crash between the broker's acknowledgement and the mark re-publishes the rows (the
consumers' inbox makes that harmless); nothing is ever marked sent before it is acked.

A row Kafka refuses for good is quarantined, and the later rows of its key flow
(events.relay_batch).

With tracing on, each row is sent under a ``send <topic>`` PRODUCER span, child of the span
that wrote the row and ended at the broker's ack; the message carries that span's
traceparent, so its consumers' spans are the send's children (events.telemetry).

One relay publishes per outbox database. SQLite has one writer at a time anyway. On
PostgreSQL the relay holding the outbox's lease publishes (events.outbox_lease); the others
stand by. When a standby takes over, the rows the old leader had in flight may be published
twice (the consumers' inbox skips the copies), never out of order: every relay publishes a
key's unsent rows from the oldest one, in id order.

Acked rows are marked sent in one statement at most every ``mark_every_s``, and the next select
starts after the last published id, so acked rows waiting for their mark are not published
again. On PostgreSQL ids are taken at INSERT and transactions commit in any order: a row
committed after a later id was selected would be passed over, so every ``rescan_every_s`` the
relay marks what is acked and selects from the oldest unsent row again. Such a row waits at
most that long; it can reach Kafka after a later row of another transaction, never after a
later row of its own key: a row whose key has an older unsent row the relay passed over
waits for that rescan, which then comes at once (a customer's cancel committed just after
the order's creation, which was passed over, reached Kafka first before; found by
tests/e2e/test_cluster_chaos.py). Two transactions that write one key concurrently have no
order to keep (a handler that locks its aggregate serialises them).

Health: a monitor beside the publishing loop measures the backlog, the oldest unsent age
and the quarantined rows from the database, whether or not publishing succeeds, and
:meth:`OutboxRelay.stall_reason` says when rows wait and nothing has been published for
longer than a bound (``/ready`` answers 503 with it).

Kept whole at about 440 lines: the publishing loop, the position it selects from, the
marks it defers and the lease share one state and one order; a batch's sending and
quarantine (events.relay_batch) and the lease (events.outbox_lease) stand apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Select,
    any_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from events.db import Database, is_transient
from events.envelope import utcnow
from events.kafka import KafkaConnection, reliable_producer, stop_quietly
from events.kafka_auth import refusals
from events.kafka_errors import describe, is_permanent
from events.metrics import (
    EVENTS_PRODUCED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_QUARANTINED,
    OUTBOX_QUARANTINED_TOTAL,
)
from events.outbox import quarantined_rows, unsent_backlog
from events.outbox_lease import LeaseLost, OutboxLease
from events.prepared import Prepared
from events.relay_batch import Outcome, Unsent, log_quarantined, send, send_in_order, settle
from events.tables import outbox
from events.telemetry import end_send_span, tracing_enabled

log = logging.getLogger(__name__)

_MARK_SENT = Prepared(
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(sent_at=bindparam("now"))
)
# PostgreSQL: one array parameter, so that one server-side prepared statement serves every
# batch size (an IN list is a new statement for each length).
_MARK_SENT_PG = (
    update(outbox)
    .where(outbox.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
    .values(sent_at=bindparam("now"))
)


ProducerFactory = Callable[[], AIOKafkaProducer]
AfterPublish = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000
    idle_poll_s: float = 1.0  # fallback for rows committed by another process
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    retention: timedelta = timedelta(days=7)
    purge_every_s: float = 60.0
    gauge_every_s: float = 2.0  # backlog, oldest age and quarantine measured this often
    mark_every_s: float = 1.0  # acked rows are marked sent at most this often
    rescan_every_s: float = 2.0  # PostgreSQL: select from the oldest unsent row this often
    lease_retry_s: float = 3.0  # PostgreSQL: a standby relay tries for the lease this often


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        kafka: KafkaConnection,
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
        self._factory = producer_factory or (lambda: reliable_producer(kafka, client_id=client_id))
        self._after_publish = after_publish
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._known_topics = None if known_topics is None else frozenset(known_topics)
        self.published = 0
        self.failures = 0
        self.quarantined = 0
        self._unsent_stmt: Prepared | None = None
        self._unsent_pg_stmt: Select[Any] | None = None
        # Acked rows wait here to be marked sent in one statement per mark_every_s (not
        # one per batch); rows up to _after are published, so the next select starts after
        # them. A crash before the mark re-publishes them, as a crash before any mark
        # always could.
        self._unmarked: list[int] = []
        self._after = 0
        self._next_mark = 0.0
        # PostgreSQL: the lease (its connection also runs the relay's selects and marks)
        # and the next rescan.
        self._lease = OutboxLease(db, self.config.lease_retry_s)
        self._next_rescan = 0.0
        # Health: when a batch last went through (monotonic), the last failure, and the
        # monitor's latest measurement of the rows waiting.
        self.last_ok = time.monotonic()
        self.last_error: str | None = None
        self.waiting: int = 0
        self.oldest_age_s: float | None = None

    @property
    def holds_lease(self) -> bool:
        """PostgreSQL: this relay holds the outbox's lease (as far as it knows)."""
        return self._lease.held

    @property
    def standby(self) -> bool:
        """PostgreSQL: another relay holds the outbox's lease."""
        return self._lease.standby

    def notify(self) -> None:
        """A unit of work committed rows: publish without waiting for the poll."""
        self._wake.set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                # A wrong password or a missing ACL stops the service (KafkaRefused is not a
                # KafkaError, so run() does not retry it); a broker that is away is retried.
                async with refusals(self._kafka, "write"):
                    await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        """Stops the producer and hands the lease back (PostgreSQL)."""
        with contextlib.suppress(DBAPIError, OSError, LeaseLost):
            await self.flush_marks()
        await self._lease.release()
        await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        await stop_quietly(producer)

    async def publish_batch(self) -> int:
        """Publish the oldest unsent rows; return how many left the queue (acknowledged, or
        quarantined). Raises the failure to back off for, if any. A standby relay on
        PostgreSQL (another one holds the lease) publishes nothing and returns 0."""
        loop = asyncio.get_running_loop()
        if not self.db.is_sqlite:
            if not await self._hold_lease():
                return 0
            if loop.time() >= self._next_rescan:
                # From the oldest unsent row again: a row whose transaction committed after
                # a later id was selected is published now (its delay is bounded by this).
                await self.flush_marks()
                self._after = 0
                self._next_rescan = loop.time() + self.config.rescan_every_s
        rows = await self._select_unsent()
        if not self.db.is_sqlite:
            rows = self._before_passed_over(rows)
        outcome = await self._publish(rows)
        if outcome.quarantine or outcome.failure is not None:
            # Rows stay behind (to retry) or leave the outbox: mark what went now and select
            # from the oldest unsent row again (a deleted last row's id is reused by SQLite).
            await self.flush_marks()
            self._after = 0
            if outcome.quarantine:
                async with self.db.session() as session, session.begin():
                    await settle(session, outcome)
            elif outcome.sent:
                await self._mark_sent([r.id for r in outcome.sent])
        elif outcome.sent:
            self._unmarked.extend(r.id for r in outcome.sent)
            self._after = outcome.sent[-1].id
        if self._unmarked and loop.time() >= self._next_mark:
            await self.flush_marks()
        self._account(outcome)
        if outcome.failure is not None:
            raise outcome.failure
        self.last_ok = time.monotonic()
        return len(outcome.sent) + len(outcome.quarantine)

    def _before_passed_over(self, rows: list[Any]) -> list[Any]:
        """PostgreSQL: the rows up to the first whose key has an older unsent row this relay
        has not published (``older``: the key's newest unsent id below the row's). That older
        row committed after a later id was selected and was passed over; the key's later
        rows wait for the rescan, which at once selects from the oldest unsent row, so that
        one key's rows reach Kafka in id order (an order placed and then cancelled must not
        arrive cancelled first)."""
        if self._after == 0 or not rows:
            return rows  # selected from the oldest unsent row: nothing was passed over
        published = set(self._unmarked)
        for index, row in enumerate(rows):
            if row.older is not None and row.older not in published:
                self._next_rescan = 0.0
                self._wake.set()  # back at once, for the rescan
                return rows[:index]
            published.add(row.id)
        return rows

    async def _select_unsent(self) -> list[Any]:
        """Unsent rows after the last published one, in id order (at most a batch)."""
        params = {"after": self._after}
        if self.db.is_sqlite:
            async with self.db.session() as session:
                return [Unsent(**r) for r in await self._unsent().rows(session, params)]
        async with self._lease.connection() as conn:
            return list((await conn.execute(self._unsent_pg(), params)).all())

    async def _hold_lease(self) -> bool:
        """PostgreSQL: whether this relay holds the outbox's lease; tries for it if not."""
        if self._lease.held:
            return True
        if not await self._lease.take():
            return False
        # A new leader starts from the oldest unsent row: another relay may have left rows
        # published and not marked, or unpublished, anywhere.
        self._after = 0
        self._next_rescan = 0.0
        return True

    def _account(self, outcome: Outcome) -> None:
        """Counts and logs what a committed batch did."""
        log_quarantined(outcome)
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

    def _unsent_pg(self) -> Select[Any]:
        if self._unsent_pg_stmt is None:
            # Each row's key's newest unsent id below it (an index probe on the unsent
            # rows' key and id): how _before_passed_over finds a key's passed-over row.
            older = outbox.alias("older")
            newest_older = (
                select(func.max(older.c.id))
                .where(
                    older.c.key == outbox.c.key,
                    older.c.sent_at.is_(None),
                    older.c.id < outbox.c.id,
                )
                .scalar_subquery()
                .label("older")
            )
            self._unsent_pg_stmt = (
                self._build_unsent()
                .add_columns(newest_older)
                .where(outbox.c.id > bindparam("after"))
            )
        return self._unsent_pg_stmt

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

    async def _publish(self, rows: Sequence[Any]) -> Outcome:
        """Sends rows in order and waits for every ack (``send_in_order``). The first
        refused row, when the refusal is permanent, is sent alone to learn whether it is
        the poison."""
        if not rows:
            return Outcome()
        producer = await self._ensure_producer()
        traced = tracing_enabled()
        outcome, first = await send_in_order(producer, rows, self._known_topics, traced)
        if first is not None:
            row, refusal = first
            if not is_permanent(refusal):
                outcome.failure = refusal
            else:
                await self._close_producer()  # the failed batch spent sequence numbers
                try:
                    await self._send_alone(row, traced)
                    outcome.sent.append(row)
                except (KafkaError, OSError, TimeoutError) as again:
                    await self._close_producer()
                    if is_permanent(again):
                        outcome.quarantine.append((row, again))
                    else:
                        outcome.failure = again
        if self._after_publish is not None:
            await self._after_publish(outcome.sent)
        return outcome

    async def _send_alone(self, row: Any, traced: bool) -> None:
        producer = await self._ensure_producer()
        ack, span = await send(producer, row, traced)
        try:
            await ack
        except BaseException as exc:
            if span is not None:
                end_send_span(span, exc)
            raise
        if span is not None:
            end_send_span(span, None)

    async def _mark_sent(self, ids: list[int]) -> None:
        params = {"ids": ids, "now": utcnow()}
        if self.db.is_sqlite:
            async with self.db.session() as session, session.begin():
                await _MARK_SENT.run(session, params)
        elif self._lease.held:
            async with self._lease.connection() as conn:
                await conn.execute(_MARK_SENT_PG, params)  # autocommit: one round trip
        else:  # the lease is gone; the rows were acked all the same
            async with self.db.session() as session, session.begin():
                await session.execute(_MARK_SENT_PG, params)

    async def flush_marks(self) -> None:
        """Marks sent the acked rows still waiting for it, in one statement."""
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
        return await unsent_backlog(self.db)

    async def refresh_gauges(self) -> None:
        """Measures the backlog, the oldest unsent age and the quarantine in the database
        (so the figures survive a restart and do not depend on publishing succeeding)."""
        await self.flush_marks()  # rows acked but not yet marked are not waiting
        count, age = await self.backlog()
        quarantined = await quarantined_rows(self.db)
        self.waiting, self.oldest_age_s = count, age
        OUTBOX_BACKLOG.set(count)
        OUTBOX_OLDEST_AGE.set(age or 0.0)
        OUTBOX_QUARANTINED.set(quarantined)

    def stall_reason(self, bound_s: float) -> str | None:
        """Why the relay is not keeping up, or None: rows wait (as last measured) and no
        batch has gone through for longer than ``bound_s``."""
        idle = time.monotonic() - self.last_ok
        if self.waiting == 0 or idle <= bound_s or self.standby:
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
        """Publish until nothing is unsent (graceful shutdown, tests, tools). On PostgreSQL
        the lease is taken if free and handed back at the end; a standby drains nothing
        (the relay holding the lease publishes)."""
        total = 0
        self._lease.try_now()
        try:
            while True:
                n = await self.publish_batch()
                total += n
                if n:
                    continue
                await self.flush_marks()
                if self._after == 0:
                    return total
                self._after = 0  # once more from the oldest unsent row (late commits)
        finally:
            if not self.db.is_sqlite:
                with contextlib.suppress(DBAPIError, OSError, LeaseLost):
                    await self.flush_marks()
                await self._lease.release()

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
                except (TimeoutError, KafkaError, OSError, DBAPIError, LeaseLost) as exc:
                    if isinstance(exc, DBAPIError):
                        if not is_transient(exc):
                            raise
                    elif not isinstance(exc, LeaseLost):
                        await self._close_producer()  # a fresh one after a Kafka failure
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
