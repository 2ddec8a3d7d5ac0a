"""The saga watchdog: finds pending orders past their deadline and reports them stuck.

Deadlines are rows (``orders.deadline_at``), not timers, so they survive restarts: a scan
after a restart finds whatever fell due while the service was down. Each overdue order is
flagged in its own unit of work: ``stuck_at`` set and ``OrderStuck`` emitted in one
transaction, and, when time-outs are enabled, the order cancelled through the same
``decide`` path as a customer's cancel (``OrderCancelled`` triggers the compensations).

Several watchdogs may scan one database (two orders processes on PostgreSQL): the row is
locked and re-checked, and the flag is a conditional UPDATE whose row count says who won, so
an order is flagged once per step whatever the number of watchdogs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from opentelemetry.trace import SpanKind

from events.db import Database
from events.envelope import utcnow
from events.outbox import Outbox, UnitOfWork
from events.telemetry import current_traceparent, parent_context, tracer
from schemas.models import OrderStuck
from services.orders.domain import Fact, Status, Step, is_overdue, time_out_reason
from services.orders.handlers import apply_fact
from services.orders.repository import OrdersRepository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WatchdogConfig:
    scan_interval: timedelta
    time_out: bool = False  # cancel overdue orders instead of only reporting them
    batch: int = 200  # orders flagged per query; a scan repeats until none is left


class Watchdog:
    def __init__(self, db: Database, outbox: Outbox, config: WatchdogConfig) -> None:
        self.db = db
        self.outbox = outbox
        self.config = config

    async def run(self, stop: asyncio.Event) -> None:
        """Scans every ``scan_interval`` until ``stop`` is set."""
        interval = self.config.scan_interval.total_seconds()
        while not stop.is_set():
            try:
                await self.scan()
            except Exception as exc:
                # A database hiccup must not end the process: the next scan retries, and
                # nothing is lost (the deadlines are rows).
                log.warning("saga watchdog scan failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()

    async def scan(self, now: datetime | None = None) -> list[str]:
        """Flags every order overdue at ``now`` (default: the clock); returns their ids."""
        now = utc(now) if now is not None else utcnow()
        flagged: list[str] = []
        while True:
            due = await self._due(now)
            before = len(flagged)
            for order_id in due:
                if await self.flag(order_id, now):
                    flagged.append(order_id)
            if len(due) < self.config.batch or len(flagged) == before:
                return flagged

    async def _due(self, now: datetime) -> list[str]:
        async with self.db.session() as s:
            return await OrdersRepository(s).due(now, self.config.batch)

    async def flag(self, order_id: str, now: datetime) -> bool:
        """Flags one order if it is still overdue; False if it moved on, ended, or another
        watchdog flagged it first."""
        async with UnitOfWork(self.db, self.outbox) as uow:
            repo = OrdersRepository(uow.session)
            # Locked (PostgreSQL): a second watchdog waits here, then sees the flag.
            row = await repo.get(order_id, lock=True)
            if row is None or row["waiting_on"] is None:
                return False
            status, deadline_at = Status(row["status"]), utc(row["deadline_at"])
            if not is_overdue(status, deadline_at, row["stuck_at"], now):
                return False
            if not await repo.flag_stuck(order_id, now):
                return False  # another watchdog got there first
            await self._report(uow, row, now)
            await uow.commit()
            return True

    async def _report(self, uow: UnitOfWork, row: Any, now: datetime) -> None:
        step = Step(row["waiting_on"])
        # A span in the saga's own trace: the report and any time-out show up in it.
        with tracer().start_as_current_span(
            "orders: saga deadline passed",
            context=parent_context(row["traceparent"]),
            kind=SpanKind.INTERNAL,
            attributes={"choreo.order_id": row["order_id"], "choreo.waiting_on": step.value},
        ):
            stuck = uow.emit(
                OrderStuck(
                    order_id=row["order_id"],
                    customer_id=row["customer_id"],
                    waiting_on=step.value,
                    waiting_since=utc(row["waiting_since"] or row["created_at"]),
                    deadline_at=utc(row["deadline_at"]),
                    detected_at=now,
                ),
                key=row["order_id"],
                correlation_id=row["correlation_id"],
                traceparent=current_traceparent() or row["traceparent"],
            )
            log.warning(
                "saga stuck",
                order_id=row["order_id"],
                waiting_on=step.value,
                timing_out=self.config.time_out,
            )
            if self.config.time_out:
                uow.cause = stuck  # the cancellation (and its compensations) follow the report
                reason = time_out_reason(step)
                await apply_fact(
                    uow, row["order_id"], Fact.TIMED_OUT, reason, failed_step=step.value
                )


def utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives back naive ones)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
