"""What the consumer runtime holds of the records it fetched, shared by the consumer
(events.consumer) and its sequenced dead letters (events.sequencing): a decoded record with
its handler, the counters, the failure of a parked event, which errors are the
infrastructure's rather than the event's, and the retry loop both apply events with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from events.codec import CodecError
from events.db import is_transient
from events.envelope import EnvelopeError, Event
from events.metrics import RETRIES
from events.pausing import DependencyUnavailable, unavailable_in
from events.routing import HandlerSpec, PermanentError, RetryPolicy

log = logging.getLogger("events.consumer")

# A record's bytes or headers that no contract reads: dead-lettered without a retry.
UNDECODABLE = (CodecError, EnvelopeError, ValidationError)


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
class Item:
    """A record decoded into the event its handler takes."""

    record: ConsumerRecord
    event: Event[Any]
    spec: HandlerSpec


class ParkedFailure(Exception):
    """A parked event failed while its key was being unblocked."""

    def __init__(self, index: int, record: ConsumerRecord, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.record = record
        self.error = error


def fails_for_good(exc: BaseException) -> bool:
    """An error no retry changes: a ``PermanentError``, or a parked event that does not
    decode or whose handler refuses it."""
    if isinstance(exc, ParkedFailure):
        return isinstance(exc.error, (PermanentError, *UNDECODABLE))
    return isinstance(exc, PermanentError)


def is_infrastructure(exc: BaseException) -> bool:
    """The database or the network failed, not the event: never dead-lettered for it."""
    return isinstance(exc, OSError) or is_transient(exc)


def reason(error: BaseException) -> str:
    """An error as a block's stored reason."""
    return f"{type(error).__name__}: {error}"[:2000]


class Retrying(Protocol):
    """What ``with_retries`` needs of its consumer."""

    name: str
    retry: RetryPolicy
    stats: ConsumerStats


async def with_retries(
    consumer: Retrying,
    attempt_once: Callable[[], Awaitable[None]],
    give_up: Callable[[Exception, int], Awaitable[None]],
    what: str,
    stop: asyncio.Event,
    on_unavailable: Callable[[DependencyUnavailable], Awaitable[None]] | None = None,
) -> None:
    """Runs ``attempt_once`` until it succeeds. An error of the event (one that fails for
    good, or any after ``retry.attempts`` tries) goes to ``give_up`` with the attempts made;
    an error of the database is not the event's fault, so it never dead-letters it: retried
    without limit, raised once ``stop`` is set.

    A dependency the handler calls being unavailable is not the event's fault either:
    ``on_unavailable`` takes it (the consumer pauses the event's partition) and this
    returns; without one (a key being unblocked, no partition to hold back) the attempt is
    repeated after the dependency's ``retry_after_s``, uncounted, until ``stop`` is set."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await attempt_once()
            return
        except Exception as exc:
            error = exc.error if isinstance(exc, ParkedFailure) else exc
            unavailable = unavailable_in(exc)
            if unavailable is not None:
                if on_unavailable is not None:
                    await on_unavailable(unavailable)
                    return
                if stop.is_set():
                    raise unavailable from None
                attempt -= 1
                log.info("%s: %s waits: %s", consumer.name, what, unavailable)
                with contextlib.suppress(TimeoutError):  # the dependency's recovery, or stop
                    async with asyncio.timeout(unavailable.retry_after_s):
                        await stop.wait()
                continue
            if is_infrastructure(error):
                if stop.is_set():
                    if error is exc:
                        raise
                    raise error from None
                attempt = min(attempt, consumer.retry.attempts - 1)
            elif fails_for_good(exc) or attempt >= consumer.retry.attempts:
                await give_up(exc, attempt)
                return
            consumer.stats.retries += 1
            RETRIES.labels(consumer.name).inc()
            log.info("%s: %s failed (attempt %d): %r", consumer.name, what, attempt, error)
            await asyncio.sleep(consumer.retry.delay(attempt))  # backoff between retries
