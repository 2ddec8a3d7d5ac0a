"""One batch of the outbox relay: its rows sent in order, the acks judged, the refused rows
quarantined.

A row Kafka refuses for good (too large, not authorised, a topic the catalogue does not
know: see :mod:`events.kafka_errors`) is quarantined: moved to ``choreo_outbox_quarantine``
in the transaction that removes it from the outbox, counted, and logged once; ``choreo
outbox`` lists, re-queues or drops it. A broker refuses a whole batch for one oversized
record, so before quarantining the relay (events.relay) sends the first refused row alone,
with a fresh producer: if it goes through, its batchmates were at fault (or nobody) and the
rows are published again, in order; if it is refused again, the row is the poison.

The later rows of a quarantined row's key are not held back: they flow. Holding a key for
ever is exactly the jam quarantine removes, and an aggregate whose event is missing is
what sagas already watch for (the orders watchdog reports the order stuck, and cancels it
when SAGA_TIMEOUT_ENABLED). Re-queueing puts the row at the end of the outbox, after them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from events.envelope import H_TRACEPARENT, utcnow
from events.kafka_errors import TopicNotInCatalogue, describe
from events.tables import outbox, outbox_quarantine
from events.telemetry import end_send_span, start_send_span, traceparent_of

log = logging.getLogger("events.relay")


class Unsent(NamedTuple):
    """An outbox row to publish, as read on SQLite (PostgreSQL's rows have these fields)."""

    id: int
    topic: str
    key: str
    event_type: str
    payload: bytes
    headers: str


class _NotSent(Exception):
    """A row after one whose send raised: it was not handed to the producer."""


@dataclass
class Outcome:
    """What became of a batch: rows to mark sent, rows to quarantine (with the refusal),
    and the failure to back off for (transient: the rows not marked are sent again)."""

    sent: list[Any] = field(default_factory=list)
    quarantine: list[tuple[Any, BaseException]] = field(default_factory=list)
    failure: BaseException | None = None
    moved: list[dict[str, Any]] = field(default_factory=list)  # quarantine rows written


async def send(
    producer: AIOKafkaProducer, row: Any, traced: bool = False
) -> tuple[Awaitable[Any], Span | None]:
    """Hands the row to the producer: its ack (a future) and, when ``traced``, the
    ``send <topic>`` span it is sent under (child of the row's traceparent; the message
    carries the span's instead, so its consumers are the span's children), which the caller
    ends when the acks are in (``end_send_span``). A refusal before sending ends the span."""
    stored: dict[str, str] = json.loads(row.headers)
    span = None
    if traced:
        span = start_send_span(row.topic, stored.get(H_TRACEPARENT))
        stored[H_TRACEPARENT] = traceparent_of(span) or stored.get(H_TRACEPARENT, "")
    headers = [(k, v.encode()) for k, v in stored.items()]
    try:
        future: Awaitable[Any] = await producer.send(
            row.topic, row.payload, key=row.key.encode(), headers=headers
        )
    except BaseException as exc:
        if span is not None:
            end_send_span(span, exc)
        raise
    return future, span


async def send_in_order(
    producer: AIOKafkaProducer,
    rows: Sequence[Any],
    known_topics: Collection[str] | None,
    traced: bool = False,
) -> tuple[Outcome, tuple[Any, BaseException] | None]:
    """Sends rows in order and waits for every ack. A row counts as sent only when it and
    every earlier row of its key in the batch were acked (one key, one partition: the rest
    are sent again, in order). Returns the outcome and the first refused row with its
    refusal, which the relay judges."""
    outcome = Outcome()
    futures: list[Awaitable[Any]] = []
    spans: list[Span | None] = []
    results: list[BaseException | None] = []
    for i, row in enumerate(rows):
        if known_topics is not None and row.topic not in known_topics:
            # Never sent, so it holds no later row of its key back.
            unknown = TopicNotInCatalogue(f"topic {row.topic!r} is not in the catalogue")
            outcome.quarantine.append((row, unknown))
            results.append(_NotSent())
            continue
        try:
            future, span = await send(producer, row, traced)
            futures.append(future)
            spans.append(span)
            results.append(None)
        except (KafkaError, OSError, TimeoutError) as exc:
            # aiokafka refuses some records before sending (larger than its request
            # size, no metadata for the topic): the rows after it wait for the next try.
            results.append(exc)
            results.extend(_NotSent() for _ in rows[i + 1 :])
            break
    answers = await asyncio.gather(*futures, return_exceptions=True)
    # The send spans end once the batch's answers are in (one pass, no callback per row):
    # a span lasts as long as its batch's slowest ack.
    if traced:
        for span, answer in zip(spans, answers, strict=True):
            if span is not None:
                end_send_span(span, answer if isinstance(answer, BaseException) else None)
    acks = iter(answers)
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
    return outcome, first


async def settle(session: AsyncSession, outcome: Outcome) -> None:
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


def log_quarantined(outcome: Outcome) -> None:
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
