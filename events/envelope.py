"""The envelope: what travels in Kafka headers beside every event's Avro body."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Generic, NamedTuple, TypeVar

H_EVENT_ID = "event-id"
H_EVENT_TYPE = "event-type"
H_SCHEMA_VERSION = "schema-version"
H_OCCURRED_AT = "occurred-at"
H_PRODUCER = "producer"
H_CORRELATION_ID = "correlation-id"
H_CAUSATION_ID = "causation-id"
H_TRACEPARENT = "traceparent"

Headers = list[tuple[str, bytes]]

# A UUID in its canonical text form, as new_event_id writes it; a regex match costs a
# tenth of uuid.UUID() on the consumer's per-event path.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class EnvelopeError(ValueError):
    """Headers that do not make a valid envelope."""


class Envelope(NamedTuple):
    """Immutable; a named tuple because every consumed event builds one (a frozen
    dataclass costs three times as much to construct)."""

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    producer: str
    correlation_id: str
    key: str
    causation_id: str | None = None
    traceparent: str | None = None

    def to_headers(self) -> Headers:
        headers: Headers = [
            (H_EVENT_ID, self.event_id.encode()),
            (H_EVENT_TYPE, self.event_type.encode()),
            (H_SCHEMA_VERSION, str(self.schema_version).encode()),
            (H_OCCURRED_AT, self.occurred_at.isoformat().encode()),
            (H_PRODUCER, self.producer.encode()),
            (H_CORRELATION_ID, self.correlation_id.encode()),
        ]
        if self.causation_id:
            headers.append((H_CAUSATION_ID, self.causation_id.encode()))
        if self.traceparent:
            headers.append((H_TRACEPARENT, self.traceparent.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]], key: bytes | None) -> Envelope:
        h = headers_dict(headers)
        try:
            event_id = h[H_EVENT_ID]
            if _UUID_TEXT.fullmatch(event_id) is None:
                uuid.UUID(event_id)  # other spellings uuid accepts; raises ValueError if bad
            # Positional, in field order: keywords cost twice as much to build, on every
            # event every consumer reads.
            return cls(
                event_id,
                # Interned: a few distinct values, repeated on every event (cheaper to
                # compare, and pickled once per batch instead of once per event).
                sys.intern(h[H_EVENT_TYPE]),
                int(h[H_SCHEMA_VERSION]),
                datetime.fromisoformat(h[H_OCCURRED_AT]),
                sys.intern(h.get(H_PRODUCER, "")),
                h.get(H_CORRELATION_ID) or event_id,
                key.decode() if key else "",
                h.get(H_CAUSATION_ID),
                h.get(H_TRACEPARENT),
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing header {exc.args[0]}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"bad envelope header: {exc}") from None


def headers_dict(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    try:
        return {name: value.decode() if value is not None else "" for name, value in headers}
    except UnicodeDecodeError:
        pass
    out = {}
    for name, value in headers:
        try:
            out[name] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            out[name] = value.hex()
    return out


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


P = TypeVar("P")


class Event(NamedTuple, Generic[P]):
    """An event as a handler sees it: envelope, payload and where it was read.

    The payload is the handler's pydantic model when one is registered, else a dict.
    Immutable; a named tuple for the same reason as ``Envelope``.
    """

    envelope: Envelope
    payload: P
    topic: str
    partition: int
    offset: int

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type
