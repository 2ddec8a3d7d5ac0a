"""The envelope: what travels in Kafka headers beside every event's Avro body.

Every event carries choreo's own headers and, mapped from the same fields, the CloudEvents
Kafka protocol binding's binary-mode headers (``ce_*`` and ``content-type``), so tools that
speak CloudEvents read choreo's events and choreo reads theirs. Choreo's headers stay for
readers of older releases (a rolling upgrade) and because they carry what CloudEvents has no
attribute for (schema version, correlation, causation). A record with only CloudEvents
headers is read from those.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Mapping, Sequence
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

# The CloudEvents Kafka protocol binding, binary content mode (CloudEvents 1.0).
CE_SPECVERSION = "ce_specversion"
CE_ID = "ce_id"
CE_SOURCE = "ce_source"
CE_TYPE = "ce_type"
CE_TIME = "ce_time"
CE_SUBJECT = "ce_subject"
CE_CONTENT_TYPE = "content-type"
SPECVERSION = "1.0"
CONTENT_TYPE = "application/avro"
SOURCE_PREFIX = "/choreo/"  # ce_source is /choreo/<producer>
_SPECVERSION = SPECVERSION.encode()
_CONTENT_TYPE = CONTENT_TYPE.encode()
_SOURCE_PREFIX = SOURCE_PREFIX.encode()
# Headers an envelope cannot do without, in each vocabulary.
_REQUIRED = (H_EVENT_ID, H_EVENT_TYPE, H_SCHEMA_VERSION, H_OCCURRED_AT)
_CE_REQUIRED = (CE_ID, CE_SPECVERSION, CE_SOURCE, CE_TYPE, CE_TIME)

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
        """Choreo's headers, then the CloudEvents binary-mode ones mapped from them."""
        event_id = self.event_id.encode()
        event_type = self.event_type.encode()
        occurred_at = self.occurred_at.isoformat().encode()  # RFC 3339 for an aware time
        producer = self.producer.encode()
        headers: Headers = [
            (H_EVENT_ID, event_id),
            (H_EVENT_TYPE, event_type),
            (H_SCHEMA_VERSION, str(self.schema_version).encode()),
            (H_OCCURRED_AT, occurred_at),
            (H_PRODUCER, producer),
            (H_CORRELATION_ID, self.correlation_id.encode()),
            (CE_SPECVERSION, _SPECVERSION),
            (CE_ID, event_id),
            (CE_SOURCE, _SOURCE_PREFIX + producer),
            (CE_TYPE, event_type),
            (CE_TIME, occurred_at),
            (CE_CONTENT_TYPE, _CONTENT_TYPE),
        ]
        if self.key:  # CloudEvents: a subject, when present, is not empty
            headers.append((CE_SUBJECT, self.key.encode()))
        if self.causation_id:
            headers.append((H_CAUSATION_ID, self.causation_id.encode()))
        if self.traceparent:
            headers.append((H_TRACEPARENT, self.traceparent.encode()))
        return headers

    @classmethod
    def from_headers(
        cls,
        headers: Sequence[tuple[str, bytes]],
        key: bytes | None,
        schema_version: int | None = None,
    ) -> Envelope:
        """The envelope from choreo's headers, or, on a record without them, from the
        CloudEvents ones. ``schema_version`` is the body's writer version, for a record
        whose headers do not say it (CloudEvents has no attribute for it; 0 when neither
        does)."""
        # Only the values the envelope uses are decoded, not all of them: every consumed
        # event comes through here, and half its headers are CloudEvents' copies.
        h = dict(headers)
        raw_id = h.get(H_EVENT_ID)
        if raw_id is None:
            return _from_cloudevents(h, key, schema_version)
        try:
            event_id = raw_id.decode()
            if _UUID_TEXT.fullmatch(event_id) is None:
                uuid.UUID(event_id)  # other spellings uuid accepts; raises ValueError if bad
            producer = h.get(H_PRODUCER)
            correlation_id = h.get(H_CORRELATION_ID)
            causation_id = h.get(H_CAUSATION_ID)
            traceparent = h.get(H_TRACEPARENT)
            # Positional, in field order: keywords cost twice as much to build, on every
            # event every consumer reads.
            return cls(
                event_id,
                # Interned: a few distinct values, repeated on every event (cheaper to
                # compare, and pickled once per batch instead of once per event).
                sys.intern(h[H_EVENT_TYPE].decode()),
                int(h[H_SCHEMA_VERSION]),
                datetime.fromisoformat(h[H_OCCURRED_AT].decode()),
                sys.intern(producer.decode()) if producer else "",
                correlation_id.decode() if correlation_id else event_id,
                key.decode() if key else "",
                causation_id.decode() if causation_id else None,
                traceparent.decode() if traceparent else None,
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing header {exc.args[0]}") from None
        except (AttributeError, TypeError):  # a required header without a value
            raise _without_value(h, _REQUIRED) from None
        except ValueError as exc:  # UnicodeDecodeError too
            raise EnvelopeError(f"bad envelope header: {exc}") from None


def _from_cloudevents(
    h: dict[str, bytes], key: bytes | None, schema_version: int | None
) -> Envelope:
    """The envelope of a record carrying only CloudEvents binary-mode headers: id, type,
    time and source (``/choreo/<producer>``, or any other source as the producer); the
    correlation is the event itself."""
    if CE_ID not in h:
        raise EnvelopeError(f"missing header {H_EVENT_ID} or {CE_ID}")
    try:
        specversion = h[CE_SPECVERSION].decode()
        if specversion.split(".")[0] != SPECVERSION.split(".")[0]:
            raise EnvelopeError(f"unsupported CloudEvents {CE_SPECVERSION} {specversion!r}")
        event_id = h[CE_ID].decode()
        if _UUID_TEXT.fullmatch(event_id) is None:
            try:
                uuid.UUID(event_id)
            except ValueError:
                raise EnvelopeError(
                    f"{CE_ID} {event_id[:60]!r} is not a UUID (choreo keys events by UUID)"
                ) from None
        source = h[CE_SOURCE].decode()
        occurred_at = datetime.fromisoformat(h[CE_TIME].decode())
        if occurred_at.tzinfo is None:
            raise EnvelopeError(f"{CE_TIME} {occurred_at.isoformat()} has no UTC offset")
        if schema_version is None:
            # 0: not said (a reader that has not decoded the body); the body's framing
            # still names the schema that wrote it.
            raw = h.get(H_SCHEMA_VERSION)
            schema_version = 0 if raw is None else int(raw)
        subject = h.get(CE_SUBJECT)
        traceparent = h.get(H_TRACEPARENT)
        return Envelope(
            event_id,
            sys.intern(h[CE_TYPE].decode()),
            schema_version,
            occurred_at,
            sys.intern(source.removeprefix(SOURCE_PREFIX)),
            event_id,
            key.decode() if key else (subject.decode() if subject else ""),
            None,
            traceparent.decode() if traceparent else None,
        )
    except KeyError as exc:
        raise EnvelopeError(f"missing header {exc.args[0]}") from None
    except (AttributeError, TypeError):
        raise _without_value(h, _CE_REQUIRED) from None
    except EnvelopeError:
        raise
    except ValueError as exc:  # UnicodeDecodeError too
        raise EnvelopeError(f"bad envelope header: {exc}") from None


def _without_value(h: Mapping[str, bytes | None], required: Sequence[str]) -> EnvelopeError:
    empty = [name for name in required if name in h and h[name] is None]
    return EnvelopeError(f"header {', '.join(empty) or '?'} has no value")


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
