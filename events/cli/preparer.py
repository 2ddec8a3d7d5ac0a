"""Events prepared for ``choreo publish``: each payload fixed (timestamps), checked against
its contract and the saga's payload model, encoded, keyed and enveloped, with everything per
event type compiled once; and a JSON Lines file read into prepared events in one pass.

:class:`EventIds` stays hand-written: ``uuid.uuid4()`` makes one ``os.urandom`` call per id,
and a bulk publish makes hundreds of thousands of ids (bench.publish measures the CLI).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from events.avro.names import NamedTypes
from events.avro.validate import Validator, is_uuid
from events.catalogue import CatalogueError, SchemaVersion
from events.cli.errors import CliError
from events.cli.payloads import (
    InputError,
    NoKeyError,
    UnknownTypeError,
    infer_key,
    parse_line,
    resolve_event_type,
)
from events.cli.progress import Meter
from events.cli.timestamps import Fix, FixCompiler
from events.codec import AvroCodec, CodecError
from events.envelope import Envelope, utcnow
from events.publisher import Outgoing

__all__ = [
    "PRODUCER",
    "EventIds",
    "Preparer",
    "collector_paused",
    "collector_skipping_kept",
    "validate_file",
]

PRODUCER = "choreo-cli"


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
            fix=FixCompiler(names).compile(schema.raw),
            validate=Validator(schema.raw, names),
            field_names=tuple(schema.field_names),
        )

    def prepare(
        self,
        event_type: str,
        payload: dict[str, Any],
        key: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Outgoing:
        """A line's record (:class:`events.cli.payloads.LineRecord`'s fields, in its order) or
        one event from arguments, validated, encoded, keyed and enveloped; InputError says
        what is wrong."""
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
        # Positional, in field order: one envelope per event.
        envelope = Envelope(
            event_id,
            info.schema.event_type,
            info.schema.version,
            utcnow(),
            PRODUCER,
            correlation_id or event_id,
            key,
        )
        return Outgoing(info.topic, value, envelope)


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


# Bulk publishing keeps one record per event and makes no reference cycles of its own, yet
# the cyclic collector would scan every kept record again and again: measured, a quarter of
# the validation time. So it is paused while reading, and skips the kept records while
# sending (when aiokafka's futures and callbacks may form cycles worth collecting).


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def collector_skipping_kept() -> Iterator[None]:
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


def validate_file(name: str, preparer: Preparer) -> list[Outgoing]:
    """Validates and encodes every line of a JSON Lines file (``-``: stdin) in one streaming
    pass; CliError names the first bad line. Nothing is sent before the whole file is
    known to be good."""
    with collector_paused():
        return _read_file(name, preparer)


def _read_file(name: str, preparer: Preparer) -> list[Outgoing]:
    records: list[Outgoing] = []
    with _open_input(name) as (handle, size), Meter("validating", size) as meter:
        done = 0
        for number, line in enumerate(handle, start=1):
            done += len(line)
            if line.isspace():
                continue
            records.append(_prepare_line(preparer, number, line))
            meter.update(done, len(records))
    return records


def _prepare_line(preparer: Preparer, number: int, line: bytes) -> Outgoing:
    try:
        parsed = parse_line(line)
    except InputError as exc:
        where = f"line {number} ({exc.event_type})" if exc.event_type else f"line {number}"
        raise CliError(f"{where}: {exc}") from None
    try:
        return preparer.prepare(*parsed)
    except UnknownTypeError as exc:
        raise CliError(f"line {number}: {exc}") from None
    except NoKeyError as exc:
        raise CliError(f'line {number} ({parsed.event_type}): {exc}; give "key"') from None
    except InputError as exc:
        raise CliError(f"line {number} ({parsed.event_type}): {exc}") from None
