"""The faust app: one agent reads the saga's event topics and keeps the windowed tables.

Partitioning. Saga events are keyed by order id, so one order's events share a partition
number on every event topic, and faust writes a table change to the changelog partition
of the message being processed. Hence:

- ``saga-starts`` (order id -> when it was created) is keyed by order id: written on
  OrderCreated and read on the terminal event, both from the same partition.
- ``seen-events`` is keyed by event id: a re-published event has the same key, so the
  same partition.
- the windowed tables are keyed by the *source partition number*: each key holds that
  partition's part of a window, is only ever written from that partition (so its
  changelog partition never changes), and a window's figures are the sum of its parts,
  added up on read. Keying them by metric name instead would write one key from every
  partition, and a restart would recover whichever partition's copy came last.

All source topics therefore need one partition count, which the tables share.

Windows are in event time: relative to the envelope's ``occurred-at`` header (when the
fact happened in its service), not the Kafka timestamp (when the relay published it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import faust
from faust.tables.wrappers import WindowWrapper
from faust.types import EventT, Message, StreamT
from faust.types.auth import CredentialsT
from opentelemetry.trace import use_span

from events.catalogue import Catalogue
from events.codec import Decoded
from events.encoding import make_codec
from events.envelope import Envelope, EnvelopeError
from events.kafka import KafkaConnection
from events.metrics import DUPLICATES, EVENTS_CONSUMED
from events.settings import SchemaEncoding
from events.telemetry import process_span, tracing_enabled
from services.analytics.codec import PlatformAvroCodec, Undecodable
from services.analytics.domain import (
    COUNTED,
    START,
    WindowOverflow,
    WindowStats,
    fact_of,
    is_terminal,
)
from services.analytics.domain import saga_duration_ms as duration_of
from services.analytics.metrics import MALFORMED
from services.analytics.windows import WINDOWS, WindowSpec

log = logging.getLogger(__name__)

CONSUMER = "analytics"
SEEN_WINDOW_S = 3600  # how counted event ids are grouped, to expire them by the hour


class TopologyError(Exception):
    """The catalogue's topics cannot be analysed together (the message says why)."""


@dataclass(frozen=True)
class AnalyticsConfig:
    """What the faust app needs, taken from the settings at the entrypoint."""

    kafka: KafkaConnection
    topic_prefix: str
    schemas_dir: Path
    data_dir: Path
    http_host: str
    http_port: int
    replication_factor: int
    # Its codec reads both framings whatever the format; the registry's URL resolves ids.
    schema_encoding: SchemaEncoding = field(default_factory=SchemaEncoding)


@dataclass
class Analytics:
    app: faust.App
    windows: dict[str, tuple[WindowSpec, Any]]  # name -> (spec, faust windowed table)
    topics: list[str]


def app_id(topic_prefix: str) -> str:
    """Faust's consumer group and the prefix of its changelog topics: one per environment."""
    return f"{topic_prefix}analytics"


def source_topics(catalogue: Catalogue) -> tuple[list[str], int]:
    topics = sorted({catalogue.topic_for(t) for t in COUNTED})
    counts = {catalogue.topics[t].partitions for t in topics}
    if len(counts) != 1:
        raise TopologyError(f"topics {', '.join(topics)} must have one partition count")
    return topics, counts.pop()


def headers_of(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers or []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


class _EventTime:
    """The event time that places a message in its window (faust's ``relative_to``).

    faust asks for it at every windowed read and write: six times per counted event (the
    seen-ids check and mark, a read and a write per window). The envelope is parsed once per
    message: the last message's time is kept, found again by identity (the message object
    is alive while it is processed, so its identity cannot be reused meanwhile)."""

    def __init__(self) -> None:
        self._message: Message | None = None
        self._at = 0.0

    def __call__(self, event: EventT[Any] | None) -> float:
        if event is None:
            raise RuntimeError("a window is chosen only while an event is processed")
        message = event.message
        if message is not self._message:
            self.remember(message, _time_of(message))
        return self._at

    def remember(self, message: Message, at: float) -> None:
        self._message, self._at = message, at


def _time_of(message: Message) -> float:
    try:
        return Envelope.from_headers(headers_of(message), message.key).occurred_at.timestamp()
    except EnvelopeError:
        return float(message.timestamp)  # unreachable: such messages are skipped first


def faust_credentials(kafka: KafkaConnection) -> CredentialsT | None:
    """The platform's connection in faust's public credentials, which faust 0.15 hands to
    aiokafka as they are (``credentials_to_aiokafka_auth``): the SASL mechanism's name goes
    through unchanged, so SCRAM-SHA-256/512 work as they do for the other services; with
    TLS the same verifying context (CA file, client certificate)."""
    context = kafka.ssl_context()
    if kafka.uses_sasl:
        return faust.SASLCredentials(
            username=kafka.username,
            password=kafka.password.get_secret_value() if kafka.password is not None else None,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism or "PLAIN",
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def build(config: AnalyticsConfig) -> Analytics:
    catalogue = Catalogue.load(config.schemas_dir).prefixed(config.topic_prefix)
    topics, partitions = source_topics(catalogue)
    name = app_id(config.topic_prefix)
    config.data_dir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        name,
        broker=[f"kafka://{h.strip()}" for h in config.kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(config.kafka),
        store="memory://",  # rebuilt from the changelog topics at start
        datadir=str(config.data_dir / name),
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=config.replication_factor,
        topic_disable_leader=True,  # no on_leader timers, so no leader-election topic
        consumer_auto_offset_reset="earliest",  # a new deployment counts the history
        # Each counted event writes three or four table changes: gathered into fewer produce
        # requests (changelogs are read only at a restart, so 50 ms later is no loss).
        producer_linger=0.05,
        web_enabled=True,
        web_bind=config.http_host,
        web_host=config.http_host,
        web_port=config.http_port,
        web_tables_enabled=False,  # /api/v1/analytics serves the tables, summed up
        web_router_enabled=False,  # one worker: there is nowhere to route to
    )
    codec = PlatformAvroCodec(make_codec(catalogue, config.schema_encoding))
    source = app.topic(*topics, key_serializer="raw", value_serializer=codec)
    starts = app.Table("saga-starts", partitions=partitions)
    event_time = _EventTime()
    windows: dict[str, tuple[WindowSpec, Any]] = {}
    for spec in WINDOWS.values():
        table = app.Table(f"{spec.name}-windows", default=dict, partitions=partitions)
        windows[spec.name] = (spec, _windowed(table, spec.size_s, spec.expires_s, event_time))
    # The relay may publish an event twice and `choreo dlq redrive` re-publishes one, both
    # with the same envelope: remember counted event ids, in the window of their event time,
    # for as long as any window they count in is kept.
    longest = max(spec.expires_s for spec in WINDOWS.values())
    seen_table = app.Table("seen-events", default=bool, partitions=partitions)
    seen = _windowed(seen_table, SEEN_WINDOW_S, longest, event_time)
    counted = _Counted()

    def count(event: EventT[Any]) -> None:
        read = _read(event)
        if read is None:
            return
        envelope, value = read
        if value.event_type not in COUNTED:
            return
        if not tracing_enabled():  # no tracer installed: skip building a no-op span
            add(event, envelope, value)
            return
        # A handling span per counted event, in its saga's trace, as the other services'.
        m = event.message
        span = process_span(envelope, m.topic, m.partition, m.offset, group=name)
        with use_span(span, end_on_exit=True):
            add(event, envelope, value)

    def add(event: EventT[Any], envelope: Envelope, value: Decoded) -> None:
        at = envelope.occurred_at.timestamp()
        event_time.remember(event.message, at)
        if seen[envelope.event_id].value():
            counted.duplicate.inc()
            return
        order_id = str(value.payload["order_id"])
        duration_ms = None
        if value.event_type == START:
            starts[order_id] = at
        elif is_terminal(value.event_type):
            started = starts.get(order_id)
            duration_ms = duration_of(started, at)
            if started is not None:
                del starts[order_id]  # one terminal event per order: the start is done with
        fact = fact_of(value.event_type, value.payload, duration_ms=duration_ms)
        assert fact is not None
        partition = event.message.partition
        parts = []
        for _, windowed in windows.values():
            part = WindowStats.from_json(windowed[partition].value())
            try:
                part.add(fact)
            except WindowOverflow as exc:  # checked before any window changes
                _skip(event.message.topic, type(exc).__name__, str(exc), event.message)
                return
            parts.append((windowed, part))
        for windowed, part in parts:
            windowed[partition] = part.to_json()
        # Marked after counting: a crash in between counts it twice rather than not at all.
        seen[envelope.event_id] = True
        counted.of(value.event_type).inc()

    @app.agent(source, name="saga-events", concurrency=1)
    async def saga_events(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            count(event)

    return Analytics(app, windows, topics)


def _windowed(table: Any, size_s: int, expires_s: int, event_time: _EventTime) -> Any:
    tumbling = table.tumbling(timedelta(seconds=size_s), expires=timedelta(seconds=expires_s))
    return cast(WindowWrapper, tumbling).relative_to(event_time)


class _Counted:
    """The counters a counted event moves, labelled once (a ``labels()`` lookup per event
    takes a lock and builds a key)."""

    def __init__(self) -> None:
        self.duplicate = DUPLICATES.labels(CONSUMER)
        self._by_type: dict[str, Any] = {}

    def of(self, event_type: str) -> Any:
        child = self._by_type.get(event_type)
        if child is None:
            child = self._by_type[event_type] = EVENTS_CONSUMED.labels(CONSUMER, event_type)
        return child


def _read(event: EventT[Any]) -> tuple[Envelope, Decoded] | None:
    """The envelope and body of a readable message; None (logged, counted) otherwise."""
    message = event.message
    value = event.value
    if isinstance(value, Undecodable):
        _skip(message.topic, value.error_type, value.error, message)
        return None
    if not isinstance(value, Decoded):  # faust hands over a missing value without decoding
        _skip(message.topic, "MalformedEventError", "message has no value", message)
        return None
    try:
        envelope = Envelope.from_headers(headers_of(message), message.key)
    except EnvelopeError as exc:
        _skip(message.topic, type(exc).__name__, str(exc), message)
        return None
    if envelope.event_type != value.event_type:
        error = f"header says {envelope.event_type}, body is {value.event_type}"
        _skip(message.topic, "EnvelopeMismatch", error, message)
        return None
    return envelope, value


def _skip(topic: str, error_type: str, error: str, message: Any) -> None:
    MALFORMED.labels(topic, error_type).inc()
    log.warning(
        "skipped unreadable message %s[%s]@%s: %s: %s",
        topic,
        message.partition,
        message.offset,
        error_type,
        error,
    )


def window_parts(windowed: Any) -> list[tuple[float, WindowStats]]:
    """Every (window start, partition's part) the table holds: keys are
    ``(partition, (start, end))`` in the table's store."""
    return [
        (float(window_range[0]), WindowStats.from_json(value))
        for (_, window_range), value in list(windowed.table.data.items())
    ]
