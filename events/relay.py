"""The outbox relay: publishes committed outbox rows in order, then marks them sent.

A crash between the broker's acknowledgement and the mark re-publishes the rows (the
consumers' inbox makes that harmless); nothing is ever marked sent before it is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from events.metrics import EVENTS_PRODUCED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from events.prepared import Prepared
from events.tables import outbox

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


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 2000
    idle_poll_s: float = 1.0  # fallback for rows committed by another process
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    retention: timedelta = timedelta(days=7)
    purge_every_s: float = 60.0


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
    ) -> None:
        self.db = db
        self.config = config or RelayConfig()
        self._factory = producer_factory or (
            lambda: reliable_producer(bootstrap, client_id=client_id)
        )
        self._after_publish = after_publish
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self.published = 0
        self.failures = 0
        self._unsent_stmt: Prepared | None = None

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
        """Publish the oldest unsent rows; return how many were acknowledged and marked."""
        if self.db.is_sqlite:
            # SQLite has one writer at a time: one relay per database, no claiming needed.
            async with self.db.session() as session:
                rows = [_Unsent(**r) for r in await self._unsent().rows(session, {})]
            acked, failure = await self._publish(rows)
            if acked:
                await self._mark_sent([r.id for r in rows[:acked]])
        else:
            # PostgreSQL: rows stay locked (claimed) until they are marked, so a second
            # relay skips them instead of publishing them twice.
            async with self.db.session() as session, session.begin():
                rows = await self._claim(session)
                acked, failure = await self._publish(rows)
                if acked:
                    await session.execute(
                        update(outbox)
                        .where(outbox.c.id.in_([r.id for r in rows[:acked]]))
                        .values(sent_at=utcnow())
                    )
        if acked:
            self.published += acked
            for event_type, n in Counter(r.event_type for r in rows[:acked]).items():
                EVENTS_PRODUCED.labels(event_type).inc(n)
        if failure is not None:
            raise failure
        return acked

    def _unsent(self) -> Prepared:
        if self._unsent_stmt is None:  # built once: it runs after every commit
            self._unsent_stmt = Prepared(self._build_unsent())
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

    async def _publish(self, rows: Sequence[Any]) -> tuple[int, BaseException | None]:
        """Sends rows in order, waits for every ack; returns the acked prefix's length and
        the first failure. Only that prefix may be marked: the rest is re-sent in order."""
        if not rows:
            return 0, None
        producer = await self._ensure_producer()
        futures = []
        for row in rows:
            headers = [(k, v.encode()) for k, v in json.loads(row.headers).items()]
            futures.append(
                await producer.send(row.topic, row.payload, key=row.key.encode(), headers=headers)
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        acked = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            acked += 1
        if self._after_publish is not None:
            await self._after_publish(rows[:acked])
        failure = results[acked] if acked < len(rows) else None
        assert failure is None or isinstance(failure, BaseException)
        return acked, failure

    async def _mark_sent(self, ids: list[int]) -> None:
        async with self.db.session() as session, session.begin():
            await _MARK_SENT.run(session, {"ids": ids, "now": utcnow()})

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

    async def drain(self) -> int:
        """Publish until nothing is unsent (graceful shutdown, tests, tools)."""
        total = 0
        while True:
            n = await self.publish_batch()
            total += n
            if n == 0:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, then flush what is committed and close."""
        backoff = self.config.backoff_initial_s
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        next_gauge = loop.time()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    n = await self.publish_batch()
                    backoff = self.config.backoff_initial_s
                    if loop.time() >= next_purge:
                        await self.purge()
                        next_purge = loop.time() + self.config.purge_every_s
                    if loop.time() >= next_gauge:
                        count, age = await self.backlog()
                        OUTBOX_BACKLOG.set(count)
                        OUTBOX_OLDEST_AGE.set(age or 0.0)
                        next_gauge = loop.time() + 2.0
                except (TimeoutError, KafkaError, OSError, DBAPIError) as exc:
                    if isinstance(exc, DBAPIError):
                        if not is_transient(exc):
                            raise
                    else:
                        await self.close()  # a fresh producer after a Kafka failure
                    # Rows published but not marked sent are published again; the
                    # consumers' inbox skips them.
                    self.failures += 1
                    log.warning(
                        "outbox relay: publish failed (%s), retrying in %.1fs", exc, backoff
                    )
                    await _wait_any(stop, None, backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, self.config.backoff_max_s)
                    continue
                if n < self.config.batch_size:
                    await _wait_any(stop, self._wake, self.config.idle_poll_s)
            with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
                await self.drain()
        finally:
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
