"""``choreo publish``, ``choreo events`` and ``choreo tail``: the producer side of the CLI.

``publish`` validates every record against its Avro contract (and encodes it) before it sends
any, so a file with one bad line publishes nothing. ``events`` shows the contracts; ``tail``
prints what arrives on a topic, decoded.

``events.cli.main`` calls :func:`register` from ``build_parser``; each command gets
``(args, settings)`` like the others there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import difflib
import gc
import json
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple, NoReturn, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, ValidationError

from events.avro.names import NamedTypes
from events.avro.validate import Validator, is_uuid
from events.catalogue import Catalogue, CatalogueError, SchemaVersion
from events.cli.errors import BROKER_ERRORS, CliError, broker_unreachable
from events.codec import AvroCodec, CodecError
from events.envelope import (
    H_CORRELATION_ID,
    H_EVENT_ID,
    H_EVENT_TYPE,
    H_OCCURRED_AT,
    H_PRODUCER,
    H_SCHEMA_VERSION,
    Envelope,
    EnvelopeError,
    utcnow,
)
from events.kafka import reliable_producer
from events.settings import PlatformSettings

PRODUCER = "choreo-cli"
_PRODUCER_BYTES = PRODUCER.encode()
KEY_FIELDS = ("order_id", "customer_id", "sku")
LINE_KEYS = ("type", "payload", "key", "event_id", "correlation_id")
_PER_SECOND = {"timestamp-millis": 1_000, "timestamp-micros": 1_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_P = TypeVar("_P", bound=argparse.ArgumentParser)
Fix = Callable[[Any, str], Any]


class InputError(ValueError):
    """One record or argument that cannot be published; the message names the field, and
    ``event_type`` the record's type when it is known."""

    def __init__(self, message: str, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


class NoKeyError(InputError):
    """No key was given and none can be inferred; the caller says how to give one."""


class UnknownTypeError(InputError):
    """Not an event type of the catalogue; the message lists close matches."""


# --------------------------------------------------------------------------- schemas


def _kind(schema: Any) -> str:
    """ "string", "record", "timestamp-millis"... of a resolved (non-union) schema."""
    if isinstance(schema, str):
        return schema
    return str(schema.get("logicalType") or schema["type"])


def _is_text(schema: Any, names: NamedTypes) -> bool:
    schema = names.resolve(schema)
    if isinstance(schema, list):
        branches = [b for b in schema if names.resolve(b) != "null"]
        return bool(branches) and all(_is_text(b, names) for b in branches)
    if isinstance(schema, str):
        return schema == "string"
    return schema["type"] in ("string", "enum")


def _allows_null(schema: Any, names: NamedTypes) -> bool:
    schema = names.resolve(schema)
    return isinstance(schema, list) and any(names.resolve(b) == "null" for b in schema)


def _field_type(schema: Any, path: Sequence[str], names: NamedTypes) -> Any | None:
    """The schema of a dotted path through nested records, or None if there is none."""
    for part in path:
        record = _record_branch(names.resolve(schema), names)
        if record is None:
            return None
        fields = {f["name"]: f["type"] for f in record["fields"]}
        if part not in fields:
            return None
        schema = fields[part]
    return schema


def _record_branch(schema: Any, names: NamedTypes) -> dict[str, Any] | None:
    branches = schema if isinstance(schema, list) else [schema]
    for branch in branches:
        branch = names.resolve(branch)
        if isinstance(branch, dict) and branch.get("type") == "record":
            return branch
    return None


# ------------------------------------------------------------- timestamps and "now"


def to_timestamp(value: Any, where: str) -> Any:
    """``now`` or an ISO 8601 string with a timezone becomes a datetime; others pass through
    (epoch milliseconds are valid as they are; the contract check rejects the rest)."""
    if not isinstance(value, str):
        return value
    if value == "now":
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{where}: expected an ISO 8601 timestamp with a timezone or 'now', got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise InputError(f"{where}: timestamp {value!r} needs a timezone (e.g. Z or +02:00)")
    return parsed


def to_epoch(moment: datetime, per_second: int) -> int:
    """What fastavro writes for an aware datetime, by the same integer arithmetic. Done here
    because fastavro's own conversion costs more than the rest of the encoding."""
    delta = moment - _EPOCH
    whole = (delta.days * 86_400 + delta.seconds) * per_second
    return whole + delta.microseconds // (1_000_000 // per_second)


def _timestamp_fix(per_second: int) -> Fix:
    def fix_timestamp(value: Any, where: str) -> Any:
        moment = to_timestamp(value, where)
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            return to_epoch(moment, per_second)
        return moment  # epoch numbers as given; the contract check rejects the rest

    return fix_timestamp


def _now_units(field: Mapping[str, Any], names: NamedTypes) -> int | None:
    """Units per second of a timestamp field named ``*_at`` without a default (filled with
    now when absent), else None."""
    if "default" in field or not str(field["name"]).endswith("_at"):
        return None
    schema = names.resolve(field["type"])
    branches = schema if isinstance(schema, list) else [schema]
    for branch in branches:
        kind = _kind(names.resolve(branch))
        if kind in _PER_SECOND:
            return _PER_SECOND[kind]
    return None


def _defaults_to_now(field: Mapping[str, Any], names: NamedTypes) -> bool:
    return _now_units(field, names) is not None


class _FixCompiler:
    """Builds, once per schema, a function that turns timestamps given as text (ISO 8601 or
    ``now``) into epoch numbers and fills in missing ``*_at`` fields; it does not walk into
    parts of the schema that hold no timestamp."""

    def __init__(self, names: NamedTypes) -> None:
        self.names = names
        self._open: set[int] = set()  # records being compiled (recursive types)

    def compile(self, schema: Any) -> Fix | None:
        schema = self.names.resolve(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = _kind(schema)
        if kind in _PER_SECOND:
            return _timestamp_fix(_PER_SECOND[kind])
        if kind == "record" and id(schema) not in self._open:
            self._open.add(id(schema))
            try:
                return self._record(schema)
            finally:
                self._open.discard(id(schema))
        if kind == "array":
            return _each(self.compile(schema["items"]))
        if kind == "map":
            return _each_value(self.compile(schema["values"]))
        return None

    def _record(self, schema: Mapping[str, Any]) -> Fix | None:
        fixes: list[tuple[str, Fix]] = []
        now: list[tuple[str, int]] = []
        for field in schema["fields"]:
            fix = self.compile(field["type"])
            if fix is not None:
                fixes.append((field["name"], fix))
            units = _now_units(field, self.names)
            if units is not None:
                now.append((field["name"], units))
        if not fixes and not now:
            return None

        def fix_record(datum: Any, where: str) -> Any:
            if not isinstance(datum, dict):
                return datum  # the contract check names the field
            for name, fix in fixes:
                if name in datum:
                    datum[name] = fix(datum[name], f"{where}.{name}" if where else name)
            for name, per_second in now:
                if name not in datum:
                    datum[name] = to_epoch(utcnow(), per_second)
            return datum

        return fix_record

    def _union(self, branches: list[Any]) -> Fix | None:
        resolved = [self.names.resolve(b) for b in branches]
        text = any(_kind(b) == "string" for b in resolved)
        stamps = [_PER_SECOND[k] for b in resolved if (k := _kind(b)) in _PER_SECOND]
        stamp = _timestamp_fix(stamps[0]) if stamps and not text else None
        nested = next(
            (f for b in resolved if not _scalar(b) and (f := self.compile(b)) is not None), None
        )
        if nested is None and stamp is None:
            return None

        def fix_union(datum: Any, where: str) -> Any:
            if isinstance(datum, str):
                return stamp(datum, where) if stamp is not None else datum
            if nested is not None and isinstance(datum, dict | list):
                return nested(datum, where)
            return datum

        return fix_union


def _scalar(schema: Any) -> bool:
    return isinstance(schema, str) or schema["type"] not in ("record", "array", "map")


def _each(fix: Fix | None) -> Fix | None:
    if fix is None:
        return None

    def fix_items(datum: Any, where: str) -> Any:
        if not isinstance(datum, list):
            return datum
        return [fix(item, f"{where}[{i}]") for i, item in enumerate(datum)]

    return fix_items


def _each_value(fix: Fix | None) -> Fix | None:
    if fix is None:
        return None

    def fix_values(datum: Any, where: str) -> Any:
        if not isinstance(datum, dict):
            return datum
        return {k: fix(v, f"{where}.{k}") for k, v in datum.items()}

    return fix_values


def normalise_payload(schema: Mapping[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` with timestamps (ISO 8601 strings, ``now``, datetimes) as epoch
    numbers, and missing ``*_at`` timestamps set to now. (Publishing fixes its freshly parsed
    payloads in place.)"""
    fix = _FixCompiler(NamedTypes(schema)).compile(schema)
    copied = copy.deepcopy(payload)
    return copied if fix is None else dict(fix(copied, ""))


# --------------------------------------------------------------------------- keys


def infer_key(payload: Mapping[str, Any], field_order: Sequence[str] | None = None) -> str | None:
    """The message key: ``order_id``, else ``customer_id``, else ``sku``, else the first
    field named ``id`` or ``*_id`` (in contract order); None when there is none."""
    for name in KEY_FIELDS:
        text = _key_text(payload.get(name))
        if text:
            return text
    for name in field_order if field_order is not None else list(payload):
        if name == "id" or name.endswith("_id"):
            text = _key_text(payload.get(name))
            if text:
                return text
    return None


def key_field(field_names: Sequence[str]) -> str | None:
    """The field :func:`infer_key` takes the key from, for a contract's fields."""
    for name in (*KEY_FIELDS, *field_names):
        if name in field_names and (name == "id" or name.endswith("_id") or name == "sku"):
            return name
    return None


def _key_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --------------------------------------------------------------------------- arguments


def parse_value(text: str, field_schema: Any = None, names: NamedTypes | None = None) -> Any:
    """A ``--field`` value: JSON when it parses, else the text itself. A field whose
    contract type is a string keeps the text as given, so that ids and postal codes such
    as ``75001`` are not turned into numbers."""
    if field_schema is not None:
        names = names or NamedTypes(field_schema)
    if names is not None and field_schema is not None and _is_text(field_schema, names):
        if text == "null" and _allows_null(field_schema, names):
            return None
        if text.startswith('"'):
            with contextlib.suppress(ValueError):
                quoted = json.loads(text)
                if isinstance(quoted, str):
                    return quoted
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fields(
    pairs: Sequence[str],
    schema: Mapping[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``name=value`` pairs (dotted names for nested records) into a payload, set on top of
    ``base`` (a ``--json`` document) when one is given."""
    payload: dict[str, Any] = base if base is not None else {}
    names = NamedTypes(schema) if schema is not None else None
    for pair in pairs:
        name, sep, text = pair.partition("=")
        path = name.split(".")
        if not sep or not all(path):
            raise InputError(f"--field expects name=value (dots for nested fields), got {pair!r}")
        field_schema = _field_type(schema, path, names) if schema and names else None
        _set_path(payload, path, parse_value(text, field_schema, names))
    return payload


def _set_path(payload: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = payload
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise InputError(f"--field {'.'.join(path)}: {where} is already set to {child!r}")
        node = child
    node[path[-1]] = value


_DECODER = json.JSONDecoder()


def parse_json_object(text: str | bytes, what: str = "") -> dict[str, Any]:
    """A JSON object; InputError (prefixed with ``what``) says what is wrong."""
    prefix = f"{what}: " if what else ""
    try:
        # Bytes decoded here, not by json.loads, which guesses the encoding each time.
        doc = _DECODER.decode(text.decode() if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise InputError(f"{prefix}not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{prefix}not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{prefix}expected a JSON object, got {_json_kind(doc)}")
    return doc


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "null" if value is None else "a number")


class LineRecord(NamedTuple):
    """One line of a ``--file``: which event, its payload and the envelope fields given."""

    event_type: str
    payload: dict[str, Any]
    key: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None


_LINE_KEY_SET = frozenset(LINE_KEYS)
_OPTIONAL_LINE_KEYS = ("key", "event_id", "correlation_id")


def parse_line(text: str | bytes) -> LineRecord:
    """One JSON Lines record; InputError names what is wrong with it."""
    doc = parse_json_object(text.strip())
    if not _LINE_KEY_SET.issuperset(doc):
        unknown = next(k for k in doc if k not in _LINE_KEY_SET)
        raise InputError(f"unknown key {unknown!r} (a line may have {', '.join(LINE_KEYS)})")
    event_type = doc.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InputError('"type" must name the event type, e.g. "OrderPlaced"')
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        got = "missing" if payload is None else _json_kind(payload)
        raise InputError(f'"payload" must be a JSON object, got {got}', event_type)
    if len(doc) == 2:  # the common case: no envelope fields given
        return LineRecord(event_type, payload)
    extra = [doc.get(k) for k in _OPTIONAL_LINE_KEYS]
    for name, value in zip(_OPTIONAL_LINE_KEYS, extra, strict=True):
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f'"{name}" must be a non-empty string', event_type)
    return LineRecord(event_type, payload, *extra)


def resolve_event_type(known: Sequence[str], name: str) -> str:
    """``name`` if it is a known event type; else InputError listing close matches."""
    if name in known:
        return name
    # Compared in lower case, so that "orderplaced" still finds OrderPlaced.
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.75)
    if close:
        _unknown(name, f"did you mean {', '.join(by_lower[c] for c in close)}?")
    _unknown(name, f"known types: {', '.join(known)}")


def _unknown(name: str, hint: str) -> NoReturn:
    raise UnknownTypeError(f"unknown event type {name!r}; {hint}")


# --------------------------------------------------------------------------- preparing


@dataclass(slots=True)
class Prepared:
    """A validated, encoded event ready to send (the payload is kept only as Avro bytes)."""

    event_type: str
    version: int
    topic: str
    key: str
    value: bytes
    event_id: str
    correlation_id: str
    occurred_at: datetime

    def headers(self) -> list[tuple[str, bytes]]:
        # Envelope(...).to_headers() without building an Envelope per event, which costs as
        # much as the send; tests/unit/test_cli_publish_parsing.py checks they stay equal.
        return [
            (H_EVENT_ID, self.event_id.encode()),
            (H_EVENT_TYPE, self.event_type.encode()),
            (H_SCHEMA_VERSION, str(self.version).encode()),
            (H_OCCURRED_AT, self.occurred_at.isoformat().encode()),
            (H_PRODUCER, _PRODUCER_BYTES),
            (H_CORRELATION_ID, self.correlation_id.encode()),
        ]


class EventIds:
    """Random (version 4) UUIDs as strings, like ``uuid.uuid4()``, from ``os.urandom`` drawn
    64 KiB at a time: one system call per 4096 ids instead of one per id."""

    _BATCH = 16 * 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(self._BATCH), 0
        raw = bytearray(self._pool[self._at : self._at + 16])
        self._at += 16
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    schema: SchemaVersion
    topic: str
    fix: Fix | None
    validate: Validator
    field_names: tuple[str, ...]


class Preparer:
    """Validates and encodes drafts; everything per event type is compiled once."""

    def __init__(
        self, codec: AvroCodec, models: Mapping[str, type[BaseModel]] | None = None
    ) -> None:
        self.codec = codec
        # The payload models bound what the contracts cannot say (lengths, maxima, text a
        # database can store): what the services would refuse is refused here, in one line.
        self._models = _payload_models() if models is None else models
        self._known = codec.catalogue.event_types
        self._types: dict[str, _TypeInfo] = {}
        self._new_id = EventIds()

    def info(self, event_type: str) -> _TypeInfo:
        info = self._types.get(event_type)
        if info is None:
            info = self._types[event_type] = self._compile(event_type)
        return info

    def _compile(self, event_type: str) -> _TypeInfo:
        event_type = resolve_event_type(self._known, event_type)
        schema = self.codec.catalogue.latest(event_type)
        try:
            topic = self.codec.catalogue.topic_for(event_type)
        except CatalogueError as exc:
            raise InputError(str(exc)) from None
        names = NamedTypes(schema.raw)
        return _TypeInfo(
            schema=schema,
            topic=topic,
            fix=_FixCompiler(names).compile(schema.raw),
            validate=Validator(schema.raw, names),
            field_names=tuple(schema.field_names),
        )

    def prepare(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        key: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Prepared:
        info = self.info(event_type)
        if info.fix is not None:
            payload = info.fix(payload, "")
        error = info.validate(payload)
        if error:
            raise InputError(error)
        model = self._models.get(info.schema.event_type)
        if model is not None:
            _check_model(model, payload)
        try:
            value = self.codec.encode(event_type, payload)
        except CodecError as exc:
            raise InputError(str(exc)) from None
        key = key or infer_key(payload, info.field_names)
        if not key:
            raise NoKeyError("no key given and no id field in the payload to take it from")
        if event_id is not None and not is_uuid(event_id):
            raise InputError(f"event id {event_id!r} is not a UUID (consumers require one)")
        event_id = event_id or self._new_id()
        return Prepared(
            event_type,
            info.schema.version,
            info.topic,
            key,
            value,
            event_id,
            correlation_id or event_id,
            utcnow(),
        )


def _payload_models() -> Mapping[str, type[BaseModel]]:
    from schemas.models import ALL_EVENTS  # the saga's models: not needed by the parsers

    return ALL_EVENTS


def _check_model(model: type[BaseModel], payload: Mapping[str, Any]) -> None:
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise InputError(f"{where.lstrip('.') or 'payload'}: {first['msg']}") from None


# --------------------------------------------------------------------------- progress


class Progress:
    """Progress on stderr: a redrawn bar with rate and ETA on a terminal, else a plain line
    every ``every_s`` seconds (logs and CI keep a readable record)."""

    def __init__(
        self,
        stream: IO[str],
        label: str,
        total: int | None,
        *,
        tty: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.label, self.total, self.clock = stream, label, total, clock
        self.tty = stream.isatty() if tty is None else tty
        self.every_s = every_s if every_s is not None else (0.1 if self.tty else 2.0)
        self.started = clock()
        self._next = self.started + self.every_s
        self._drawn = False

    def update(self, done: int, count: int) -> None:
        """``done`` units of ``total`` (bytes or events), ``count`` events so far."""
        if count & 255:  # look at the clock every 256 events only: this is the hot loop
            return
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every_s
            self._show(done, count, now)

    def finish(self) -> None:
        if self._drawn and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def render(self, done: int, count: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        parts = [f"{self.label} {count:,} events", f"{count / elapsed:,.0f} events/s"]
        if self.total:
            fraction = min(done / self.total, 1.0)
            eta = elapsed * (1 - fraction) / fraction if fraction else None
            parts.insert(1, f"{100 * fraction:3.0f}%")
            parts.append(f"ETA {_duration(eta)}")
            if self.tty:
                width = 24
                filled = int(width * fraction)
                parts.insert(0, f"[{'#' * filled}{'.' * (width - filled)}]")
        return "  ".join(parts)

    def _show(self, done: int, count: int, now: float) -> None:
        line = self.render(done, count, now)
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()
        self._drawn = True


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# --------------------------------------------------------------------------- sending


class Landed(NamedTuple):
    """Where one event was written (a tuple: one is made per event sent)."""

    record: Prepared
    topic: str
    partition: int
    offset: int


OnLanded = Callable[[Landed], None]


@dataclass(slots=True)
class _Batch:
    """One partition's batch being filled, and the events in it (in offset order)."""

    builder: Any
    records: list[Prepared]


class _BatchSender:
    """Packs events into one batch per partition with aiokafka's batch API and submits
    each batch as it fills, instead of calling ``send()`` per event: ``send()``'s per-call
    work costs about as much CPU as validating the event (bench.publish measures the two).

    Nothing about delivery changes: the producer is the same idempotent one (acks=all;
    sequence numbers are given to each batch as it is sent), the partition is chosen by
    aiokafka's default partitioner from the same key and partition list as ``send()``
    uses, and a partition's batches go out in order, so a key's events keep their order.
    """

    def __init__(self, kafka: Any, on_landed: OnLanded) -> None:
        self.kafka = kafka
        self.on_landed = on_landed
        self.acked = 0
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._submitted: deque[tuple[asyncio.Future[Any], list[Prepared]]] = deque()

    async def add(self, record: Prepared) -> None:
        key = record.key.encode()
        ids = self._partitions.get(record.topic) or await self._ids(record.topic)
        partition = self._partitioner(key, ids, None)
        batch = self._open.get((record.topic, partition))
        if batch is None:
            batch = self._open[(record.topic, partition)] = self._new_batch()
        if not self._append(batch, record, key):
            await self._submit(record.topic, partition, batch)
            batch = self._open[(record.topic, partition)] = self._new_batch()
            if not self._append(batch, record, key):
                raise CliError(f"event {record.event_id} is larger than a whole batch")
        self._report_done()

    async def finish(self) -> None:
        """Submits the partly filled batches and waits for every acknowledgement."""
        for (topic, partition), batch in self._open.items():
            if batch.records:
                await self._submit(topic, partition, batch)
        self._open.clear()
        while self._submitted:
            future, records = self._submitted.popleft()
            self._landed(await future, records)

    async def _ids(self, topic: str) -> list[int]:
        ids = self._partitions.get(topic)
        if ids is None:
            # Sorted, as aiokafka's send() lists them for the partitioner.
            ids = self._partitions[topic] = sorted(await self.kafka.partitions_for(topic))
        return ids

    def _new_batch(self) -> _Batch:
        return _Batch(self.kafka.create_batch(), [])

    @staticmethod
    def _append(batch: _Batch, record: Prepared, key: bytes) -> bool:
        appended = batch.builder.append(
            timestamp=None, key=key, value=record.value, headers=record.headers()
        )
        if appended is None:
            return False
        batch.records.append(record)
        return True

    async def _submit(self, topic: str, partition: int, batch: _Batch) -> None:
        # Waits while the partition's previous batch is still queued: back-pressure.
        future = await self.kafka.send_batch(batch.builder, topic, partition=partition)
        self._submitted.append((future, batch.records))

    def _report_done(self) -> None:
        while self._submitted and self._submitted[0][0].done():
            future, records = self._submitted.popleft()
            self._landed(future.result(), records)

    def _landed(self, metadata: Any, records: list[Prepared]) -> None:
        for i, record in enumerate(records):
            self.on_landed(Landed(record, metadata.topic, metadata.partition, metadata.offset + i))
        self.acked += len(records)


async def send_all(bootstrap: str, records: Sequence[Prepared], on_landed: OnLanded) -> int:
    """Sends every record with the idempotent producer (acks=all) and waits for every
    acknowledgement; ``on_landed`` hears of each event, in order within a partition."""
    await _require_topics(bootstrap, sorted({r.topic for r in records}))
    kafka = reliable_producer(bootstrap, client_id=PRODUCER)
    sender = _BatchSender(kafka, on_landed)
    try:
        await kafka.start()
        for record in records:
            await sender.add(record)
        await sender.finish()
    except KafkaError as exc:
        raise CliError(
            f"cannot publish to {bootstrap}: {exc or type(exc).__name__} "
            f"({sender.acked} of {len(records)} events acknowledged before the failure)"
        ) from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await kafka.stop()
    return sender.acked


async def _require_topics(bootstrap: str, topics: list[str]) -> None:
    """Fails at once on a missing topic, where the producer would wait out its timeout."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=PRODUCER)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except BROKER_ERRORS as exc:
        raise broker_unreachable(bootstrap, exc) from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise CliError(
            f"topic {', '.join(missing)} does not exist (create it with 'choreo topics apply')"
        )


# --------------------------------------------------------------------------- output


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_jsonable, ensure_ascii=False)


def _describe(record: Prepared, landed: Landed | None = None) -> dict[str, Any]:
    return {
        "event_type": record.event_type,
        "event_id": record.event_id,
        "key": record.key,
        "correlation_id": record.correlation_id,
        "topic": record.topic,
        "partition": None if landed is None else landed.partition,
        "offset": None if landed is None else landed.offset,
    }


class _Report:
    """What ``publish`` prints on stdout, as text lines or JSON objects."""

    def __init__(self, output: str, codec: AvroCodec) -> None:
        self.json = output == "json"
        self.codec = codec

    def landed(self, landed: Landed) -> None:
        if self.json:
            print(compact(_describe(landed.record, landed)))
        else:
            print(
                f"{landed.record.event_type} {landed.record.event_id} -> "
                f"{landed.topic}[{landed.partition}]@{landed.offset}"
            )

    def would_send(self, record: Prepared) -> None:
        # Decoded from the encoded bytes: what consumers would read, defaults included.
        payload = self.codec.decode(record.value).payload
        if self.json:
            print(compact({**_describe(record), "dry_run": True, "payload": payload}))
        else:
            print(
                f"would publish {record.event_type} {record.event_id} -> {record.topic} "
                f"key={record.key} {compact(payload)}"
            )

    def summary(self, topics: Mapping[str, int], seconds: float, *, dry_run: bool) -> None:
        count = sum(topics.values())
        rate = count / seconds if seconds > 0 else 0.0
        if self.json:
            doc = {"events": count, "topics": dict(topics), "seconds": round(seconds, 3)}
            print(compact({**doc, "events_per_s": round(rate, 1)}))
            return
        where = ", ".join(f"{t} {n:,}" for t, n in topics.items())
        if dry_run:
            print(f"dry run: {count:,} valid events, nothing sent ({where})")
        else:
            print(f"published {count:,} events in {seconds:.2f}s ({rate:,.0f} events/s): {where}")


# --------------------------------------------------------------------------- publish


def _catalogue(settings: PlatformSettings) -> Catalogue:
    try:
        return Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
    except (CatalogueError, OSError, ValueError) as exc:
        raise CliError(f"cannot load the contracts from {settings.schemas_dir}: {exc}") from None


def _publish(args: argparse.Namespace, settings: PlatformSettings) -> int:
    codec = AvroCodec(_catalogue(settings))
    preparer = Preparer(codec)
    report = _Report(args.output, codec)
    if args.file is not None:
        return _publish_file(args, settings, preparer, report)
    return _publish_one(args, settings, preparer, report)


def _publish_one(
    args: argparse.Namespace, settings: PlatformSettings, preparer: Preparer, report: _Report
) -> int:
    if args.event_type is None:
        raise CliError("give an EVENT_TYPE or --file (see 'choreo publish --help')")
    try:
        info = preparer.info(args.event_type)
        event_type = info.schema.event_type
    except InputError as exc:
        raise CliError(str(exc)) from None
    try:
        record = preparer.prepare(
            event_type,
            _payload_from_args(args, info.schema.raw),
            key=args.key,
            event_id=args.event_id,
            correlation_id=args.correlation_id,
        )
    except NoKeyError as exc:
        raise CliError(f"{event_type}: {exc}; give --key") from None
    except InputError as exc:
        raise CliError(f"{event_type}: {exc}") from None
    if args.dry_run:
        report.would_send(record)
        return 0
    asyncio.run(send_all(settings.kafka_bootstrap_servers, [record], report.landed))
    return 0


def _payload_from_args(args: argparse.Namespace, schema: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] | None = None
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        base = parse_json_object(text, "--json")
    return parse_fields(args.field, schema, base)


def _publish_file(
    args: argparse.Namespace, settings: PlatformSettings, preparer: Preparer, report: _Report
) -> int:
    given = [name for name in ("event_type", "key", "json", "event_id") if getattr(args, name)]
    if given or args.field or args.correlation_id:
        raise CliError(
            "--file takes no EVENT_TYPE, --key, --field, --json, --event-id or "
            "--correlation-id: each line gives its own"
        )
    started = time.perf_counter()
    records = validate_file(args.file, preparer)
    if not records:
        raise CliError(f"{args.file}: no events in the file")
    topics: dict[str, int] = {}
    for record in records:
        topics[record.topic] = topics.get(record.topic, 0) + 1
    if args.dry_run:
        for record in records:
            report.would_send(record)
        if not report.json:  # JSON: the objects above, one per event, and nothing else
            report.summary(topics, time.perf_counter() - started, dry_run=True)
        return 0
    progress = Progress(sys.stderr, "publishing", len(records))
    count = 0

    def landed(_: Landed) -> None:
        nonlocal count
        count += 1
        progress.update(count, count)

    with _collector_skipping_kept():
        asyncio.run(send_all(settings.kafka_bootstrap_servers, records, landed))
    progress.finish()
    report.summary(topics, time.perf_counter() - started, dry_run=False)
    return 0


# Bulk publishing keeps one record per event and makes no reference cycles of its own, yet
# the cyclic collector would scan every kept record again and again: measured, a quarter of
# the validation time. So it is paused while reading, and skips the kept records while
# sending (when aiokafka's futures and callbacks may form cycles worth collecting).


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _collector_skipping_kept() -> Iterator[None]:
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The file (or stdin for ``-``) in binary, and its size when known."""
    if name == "-":
        yield sys.stdin.buffer, None
        return
    try:
        handle = Path(name).open("rb")  # noqa: SIM115 - closed below, size read first
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        yield handle, size or None


def validate_file(name: str, preparer: Preparer) -> list[Prepared]:
    """Validates and encodes every line of a JSON Lines file (``-``: stdin) in one streaming
    pass; CliError names the first bad line. Nothing is sent before the whole file is
    known to be good."""
    with _collector_paused():
        return _read_file(name, preparer)


def _read_file(name: str, preparer: Preparer) -> list[Prepared]:
    records: list[Prepared] = []
    with _open_input(name) as (handle, size):
        progress = Progress(sys.stderr, "validating", size)
        done = 0
        for number, line in enumerate(handle, start=1):
            done += len(line)
            if line.isspace():
                continue
            records.append(_prepare_line(preparer, number, line))
            progress.update(done, len(records))
        progress.finish()
    return records


def _prepare_line(preparer: Preparer, number: int, line: bytes) -> Prepared:
    try:
        parsed = parse_line(line)
    except InputError as exc:
        where = f"line {number} ({exc.event_type})" if exc.event_type else f"line {number}"
        raise CliError(f"{where}: {exc}") from None
    try:
        return preparer.prepare(
            parsed.event_type,
            parsed.payload,
            key=parsed.key,
            event_id=parsed.event_id,
            correlation_id=parsed.correlation_id,
        )
    except UnknownTypeError as exc:
        raise CliError(f"line {number}: {exc}") from None
    except NoKeyError as exc:
        raise CliError(f'line {number} ({parsed.event_type}): {exc}; give "key"') from None
    except InputError as exc:
        raise CliError(f"line {number} ({parsed.event_type}): {exc}") from None


# --------------------------------------------------------------------------- events


def type_name(schema: Any, names: NamedTypes) -> str:
    """A short human name: ``string``, ``uuid``, ``array<OrderLine>``, ``string?``."""
    resolved = names.resolve(schema)
    if isinstance(resolved, list):
        inner = [type_name(b, names) for b in resolved if names.resolve(b) != "null"]
        joined = " | ".join(inner)
        return f"{joined}?" if len(inner) < len(resolved) else joined
    if isinstance(resolved, str):
        return resolved
    kind = resolved["type"]
    if kind in ("record", "enum", "fixed"):
        return str(resolved["name"]).rsplit(".", 1)[-1]
    if kind == "array":
        return f"array<{type_name(resolved['items'], names)}>"
    if kind == "map":
        return f"map<{type_name(resolved['values'], names)}>"
    return str(resolved.get("logicalType") or kind)


def field_line(field: Mapping[str, Any], names: NamedTypes) -> str:
    """``name: type`` and how it may be left out."""
    notes = []
    if "default" in field:
        default = field["default"]
        notes.append("optional, default null" if default is None else f"default {compact(default)}")
    elif _defaults_to_now(field, names):
        notes.append("now if omitted")
    text = f"{field['name']}: {type_name(field['type'], names)}"
    return f"{text} ({', '.join(notes)})" if notes else text


def _events(args: argparse.Namespace, settings: PlatformSettings) -> int:
    catalogue = _catalogue(settings)
    as_json = args.output == "json"
    if args.event_type is None:
        for event_type in catalogue.event_types:
            if as_json:
                print(compact(_event_json(catalogue, event_type)))
            else:
                _print_summary(catalogue, event_type)
        return 0
    try:
        event_type = resolve_event_type(catalogue.event_types, args.event_type)
    except InputError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        print(compact(_event_json(catalogue, event_type, detail=True)))
    else:
        _print_details(catalogue, event_type)
    return 0


def _event_json(catalogue: Catalogue, event_type: str, *, detail: bool = False) -> dict[str, Any]:
    """What the text listing says of a type (and with ``detail``, what the detail view
    says, plus the whole Avro schema of its latest version)."""
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    fields = [
        {
            "name": f["name"],
            "type": type_name(f["type"], names),
            **({"default": f["default"]} if "default" in f else {}),
        }
        for f in schema.raw["fields"]
    ]
    doc: dict[str, Any] = {
        "event_type": event_type,
        "version": schema.version,
        "topic": _topic_of(catalogue, event_type),
        "fields": fields,
    }
    if detail:
        doc |= {
            "context": schema.context,
            "versions": [
                v for v in range(1, schema.version + 1) if _has_version(catalogue, event_type, v)
            ],
            "key": key_field(schema.field_names),
            "schema": schema.raw,
        }
    return doc


def _topic_of(catalogue: Catalogue, event_type: str) -> str:
    try:
        return catalogue.topic_for(event_type)
    except CatalogueError:
        return "(no topic)"


def _print_summary(catalogue: Catalogue, event_type: str) -> None:
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    fields = ", ".join(field_line(f, names) for f in schema.raw["fields"])
    print(f"{event_type} v{schema.version} -> {_topic_of(catalogue, event_type)}: {fields}")


def _print_details(catalogue: Catalogue, event_type: str) -> None:
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    key = key_field(schema.field_names)
    versions = [
        str(v) for v in range(1, schema.version + 1) if _has_version(catalogue, event_type, v)
    ]
    print(
        f"{event_type} v{schema.version} ({schema.context}) -> {_topic_of(catalogue, event_type)}"
    )
    if schema.raw.get("doc"):
        print(f"  {schema.raw['doc']}")
    print(f"  versions: {', '.join(versions)}; key: {key or 'none inferred, give --key'}")
    print("  fields:")
    for line in _field_lines(schema.raw, names, "    ", set()):
        print(line)


def _has_version(catalogue: Catalogue, event_type: str, version: int) -> bool:
    try:
        catalogue.version(event_type, version)
    except CatalogueError:
        return False
    return True


def _field_lines(
    record: Mapping[str, Any], names: NamedTypes, indent: str, seen: set[int]
) -> list[str]:
    """One line per field, nested records' fields indented under them (each record once)."""
    seen = seen | {id(record)}
    lines = []
    for field in record["fields"]:
        doc = f"  # {field['doc']}" if field.get("doc") else ""
        lines.append(f"{indent}{field_line(field, names)}{doc}")
        nested = _record_branch(_element(names.resolve(field["type"]), names), names)
        if nested is not None and id(nested) not in seen:
            lines += _field_lines(nested, names, indent + "  ", seen)
    return lines


def _element(schema: Any, names: NamedTypes) -> Any:
    """What an array or map holds (else the schema itself)."""
    branches = schema if isinstance(schema, list) else [schema]
    for branch in branches:
        branch = names.resolve(branch)
        if isinstance(branch, dict) and branch.get("type") in ("array", "map"):
            return names.resolve(branch.get("items", branch.get("values")))
    return schema


# --------------------------------------------------------------------------- tail


@dataclass(frozen=True, slots=True)
class Shown:
    """One message as ``tail`` shows it; ``error`` says why it could not be decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    event_type: str | None = None
    event_id: str | None = None
    payload: dict[str, Any] | None = None
    error: str | None = None

    def text(self) -> str:
        where = f"{self.partition}@{self.offset}"
        if self.payload is None:
            return f"{where} UNDECODABLE key={self.key}: {self.error}"
        line = f"{where} {self.event_type} key={self.key} id={self.event_id or '?'} "
        line += compact(self.payload)
        return f"{line} ({self.error})" if self.error else line

    def json(self) -> str:
        return compact({k: getattr(self, k) for k in self.__slots__})


def decode_message(codec: AvroCodec, message: Any) -> Shown:
    """Never raises: what cannot be decoded is shown with the reason."""
    key = message.key.decode(errors="replace") if message.key else ""
    base = Shown(message.topic, message.partition, message.offset, key)
    if message.value is None:
        return _with(base, error="tombstone (no value)")
    try:
        decoded = codec.decode(message.value)
    except CodecError as exc:
        reason = str(exc) if "bytes" in str(exc) else f"{exc} ({len(message.value)} bytes)"
        return _with(base, error=reason)
    try:
        envelope = Envelope.from_headers(message.headers or [], message.key)
    except EnvelopeError as exc:
        return _with(base, event_type=decoded.event_type, payload=decoded.payload, error=str(exc))
    return _with(
        base, event_type=decoded.event_type, event_id=envelope.event_id, payload=decoded.payload
    )


def _with(base: Shown, **changes: Any) -> Shown:
    fields = {k: getattr(base, k) for k in base.__slots__}
    return Shown(**{**fields, **changes})


def tail_topic(topic: str, prefix: str) -> str:
    """TOPIC as the catalogue names it; ``TOPIC_PREFIX`` is added unless already there."""
    return topic if not prefix or topic.startswith(prefix) else prefix + topic


async def tail(
    bootstrap: str,
    codec: AvroCodec,
    topic: str,
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    as_json: bool = False,
    out: IO[str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Prints decoded messages as they arrive; returns how many were shown."""
    out = out or sys.stdout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,  # no group: nothing is committed, nobody else's offsets move
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="choreo-tail",
    )
    shown = 0
    try:
        partitions = await topic_partitions(bootstrap, topic)
        await consumer.start()
        await _assign_all(consumer, topic, partitions, from_beginning)
        start = "the beginning" if from_beginning else "the end"
        (ready or _notice)(
            f"tailing {topic} ({len(partitions)} partitions) from {start}; Ctrl-C stops"
        )
        while max_messages is None or shown < max_messages:
            limit = None if max_messages is None else max_messages - shown
            batch = await consumer.getmany(timeout_ms=500, max_records=limit)
            for _, messages in sorted(batch.items()):
                for message in messages:
                    shown_message = decode_message(codec, message)
                    out.write((shown_message.json() if as_json else shown_message.text()) + "\n")
                    shown += 1
            out.flush()  # a pipe would otherwise hold the lines until exit
    except KafkaConnectionError as exc:
        raise broker_unreachable(bootstrap, exc) from None
    except KafkaError as exc:
        raise CliError(f"cannot tail {topic} at {bootstrap}: {exc}") from None
    finally:
        await _stop_quietly(consumer)
    return shown


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids; CliError (with close names) when it does not exist."""
    # The admin client, because a consumer's topics() does not fill its own metadata.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="choreo-tail")
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic not in existing:
            close = difflib.get_close_matches(topic, sorted(existing), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CliError(f"topic {topic} does not exist{hint}")
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in described["partitions"])


async def _assign_all(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int], from_beginning: bool
) -> None:
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
    for tp in tps:
        # Resolve the start now, so that whatever is published after the notice is shown.
        await consumer.position(tp)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    # A group-less aiokafka consumer can raise CancelledError from stop() when it is stopped
    # very soon after start (Ctrl-C at once); there is nothing left to clean up then.
    with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
        await consumer.stop()


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _tail(args: argparse.Namespace, settings: PlatformSettings) -> int:
    codec = AvroCodec(_catalogue(settings))
    topic = tail_topic(args.topic, settings.topic_prefix)
    try:
        asyncio.run(
            tail(
                settings.kafka_bootstrap_servers,
                codec,
                topic,
                from_beginning=args.from_beginning,
                max_messages=args.max,
                as_json=args.output == "json",
            )
        )
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a tail ends: quietly, successfully
    return 0


# --------------------------------------------------------------------------- parsers

_PUBLISH_EPILOG = """\
timestamps: timestamp-millis fields take ISO 8601 with a timezone (2026-03-01T12:00:00Z),
'now', or epoch milliseconds; a missing timestamp field named *_at is set to now.
key: defaults to the payload's order_id, else customer_id, else sku, else its first *_id field.
--file: JSON Lines, one event a line:
  {"type": "OrderPlaced", "payload": {...}, "key": "...", "event_id": "...",
   "correlation_id": "..."}   (key, event_id and correlation_id are optional)
every record is validated before anything is sent: one bad line publishes nothing.
--output json prints one object per event (single events and every --dry-run event), or
one summary object for a --file publish.

examples:
  choreo publish StockRestocked --field restock_id=7c9e6679-7425-40de-944b-e07fc1f99a7b \\
      --field sku=widget --field quantity=5          (restocked_at: now, key: the sku)
  choreo publish OrderPlaced --json "$(cat order.json)" --field shipping_address.country=DE
  choreo publish OrderPlaced --json - < order.json --field 'lines=[{"sku": "a", ...}]'
  choreo publish --file events.jsonl --dry-run
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_publish(sub: argparse._SubParsersAction[_P]) -> None:
    publish = sub.add_parser(
        "publish",
        help="publish events validated against their Avro contracts",
        description="Publish one event from arguments, or many from a JSON Lines file.",
        epilog=_PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("event_type", nargs="?", metavar="EVENT_TYPE", help="e.g. OrderPlaced")
    publish.add_argument("--key", metavar="K", help="message key (default: inferred, see below)")
    publish.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a payload field; VALUE is JSON when it parses (lists, numbers), else text; "
        "dotted names for nested records (shipping_address.country=DE); repeatable",
    )
    publish.add_argument(
        "--json", metavar="DOC", help="the payload as a JSON object ('-' reads stdin)"
    )
    publish.add_argument("--file", metavar="FILE", help="JSON Lines of events ('-' reads stdin)")
    publish.add_argument("--event-id", metavar="UUID", help="event id (default: a new UUID)")
    publish.add_argument("--correlation-id", metavar="ID", help="default: the event id")
    publish.add_argument(
        "--dry-run", action="store_true", help="validate and show what would be sent; send nothing"
    )
    publish.add_argument("--output", choices=["text", "json"], default="text")
    publish.set_defaults(run=_publish)


def _add_events(sub: argparse._SubParsersAction[_P]) -> None:
    events = sub.add_parser(
        "events",
        help="list event types with version, topic and fields",
        description="List the catalogue's event types, or show one in detail.",
    )
    events.add_argument("event_type", nargs="?", metavar="TYPE", help="show this type in detail")
    events.add_argument("--output", choices=["text", "json"], default="text")
    events.set_defaults(run=_events)


def _add_tail(sub: argparse._SubParsersAction[_P]) -> None:
    tail_cmd = sub.add_parser(
        "tail",
        help="print a topic's events, decoded, as they arrive",
        description="Print decoded events from TOPIC as they arrive (no consumer group: "
        "nothing is committed). TOPIC_PREFIX is added unless TOPIC has it. Ctrl-C stops.",
    )
    tail_cmd.add_argument("topic", metavar="TOPIC", help="e.g. orders.requests")
    tail_cmd.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest message, not the end"
    )
    tail_cmd.add_argument("--max", type=_positive, metavar="N", help="stop after N messages")
    tail_cmd.add_argument("--output", choices=["text", "json"], default="text")
    tail_cmd.set_defaults(run=_tail)


def register(sub: argparse._SubParsersAction[_P]) -> None:
    """Adds ``publish``, ``events`` and ``tail`` to the ``choreo`` sub-commands."""
    _add_publish(sub)
    _add_events(sub)
    _add_tail(sub)


__all__ = [
    "InputError",
    "Landed",
    "LineRecord",
    "NoKeyError",
    "Prepared",
    "Preparer",
    "Progress",
    "Shown",
    "UnknownTypeError",
    "compact",
    "decode_message",
    "infer_key",
    "key_field",
    "normalise_payload",
    "parse_fields",
    "parse_line",
    "parse_value",
    "register",
    "resolve_event_type",
    "send_all",
    "tail",
    "tail_topic",
    "topic_partitions",
    "type_name",
    "validate_file",
]
