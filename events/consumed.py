"""What the consumer runtime holds of the records it fetched, shared by the consumer
(events.consumer) and its sequenced dead letters (events.sequencing): a decoded record with
its handler, the counters, the failure of a parked event, and which errors are the
infrastructure's rather than the event's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from events.codec import CodecError
from events.db import is_transient
from events.envelope import EnvelopeError, Event
from events.routing import HandlerSpec, PermanentError

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
