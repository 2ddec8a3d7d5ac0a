"""Avro encoding of event payloads, behind one framing interface.

The default framing is Avro single-object encoding: ``C3 01`` + the 8-byte CRC-64-AVRO
fingerprint of the writer schema + the schemaless Avro body. The reader finds the writer
schema by fingerprint and resolves it to the latest catalogued version of that type.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import LOGICAL_READERS

from events.avro.validate import Validator
from events.catalogue import Catalogue, SchemaVersion


class CodecError(Exception):
    """Bytes that cannot be turned into an event, or a payload that breaks its contract."""


class UnknownSchemaError(CodecError):
    """The writer schema's fingerprint is not in the catalogue."""


class MalformedEventError(CodecError):
    """The bytes are not a well-formed single-object encoded Avro record."""


class ContractViolation(CodecError):
    """A payload does not match its Avro contract."""


class Framing(Protocol):
    """How a writer schema is identified in front of the Avro body."""

    def frame(self, schema: SchemaVersion, body: bytes) -> bytes: ...

    def writer_of(self, data: bytes, catalogue: Catalogue) -> tuple[SchemaVersion, int]:
        """The writer schema and the offset where the Avro body starts."""
        ...


_MAGIC = b"\xc3\x01"
_HEADER_LEN = 10


class SingleObjectFraming:
    def frame(self, schema: SchemaVersion, body: bytes) -> bytes:
        return _MAGIC + schema.fingerprint + body

    def writer_of(self, data: bytes, catalogue: Catalogue) -> tuple[SchemaVersion, int]:
        if len(data) < _HEADER_LEN:
            raise MalformedEventError(f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != _MAGIC:
            raise MalformedEventError(f"bad magic {data[:2].hex()}, expected c301")
        fp = data[2:_HEADER_LEN]
        schema = catalogue.by_fingerprint(fp)
        if schema is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {fp.hex()}")
        return schema, _HEADER_LEN


@dataclass(frozen=True, slots=True)
class Decoded:
    event_type: str
    writer_version: int
    payload: dict[str, Any]


def _keep_uuid_text(data: str, *_schemas: Any) -> str:
    return data


def _uuids_as_text() -> None:
    """Decode ``logicalType: uuid`` strings as the text on the wire, not ``uuid.UUID``.

    Payload models hold uuids as canonical strings anyway (``schemas.models.Uuid``), so
    building a ``UUID`` per id field only to turn it back into text cost two conversions an
    id on every decode. Invalid text is still refused, by the model's validator.
    """
    LOGICAL_READERS["string-uuid"] = _keep_uuid_text  # fastavro's public hook, process-wide


class AvroCodec:
    def __init__(self, catalogue: Catalogue, framing: Framing | None = None) -> None:
        self.catalogue = catalogue
        self.framing: Framing = framing or SingleObjectFraming()
        self._validators: dict[bytes, Validator] = {}  # by fingerprint, compiled on first use
        _uuids_as_text()

    def __reduce__(self) -> tuple[Any, ...]:
        # Through __init__ again: a process the codec is sent to needs the uuid hook too.
        return (AvroCodec, (self.catalogue, self.framing))

    def validate(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Raise ContractViolation naming the field when the payload breaks the contract."""
        schema = self.catalogue.latest(event_type)
        validator = self._validators.get(schema.fingerprint)
        if validator is None:
            validator = self._validators[schema.fingerprint] = Validator(schema.raw)
        error = validator(payload)
        if error:
            raise ContractViolation(f"{event_type}: {error}")

    def encode(
        self, event_type: str, payload: Mapping[str, Any], version: int | None = None
    ) -> bytes:
        schema = (
            self.catalogue.latest(event_type)
            if version is None
            else self.catalogue.version(event_type, version)
        )
        buf = io.BytesIO()
        try:
            schemaless_writer(buf, schema.parsed, payload)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ContractViolation(f"{event_type}: {exc}") from None
        return self.framing.frame(schema, buf.getvalue())

    def decode(self, data: bytes) -> Decoded:
        writer, start = self.framing.writer_of(data, self.catalogue)
        reader = self.catalogue.latest(writer.event_type)
        buf = io.BytesIO(data)
        buf.seek(start)
        try:
            if reader is writer:
                payload = schemaless_reader(buf, writer.parsed, None)
            else:
                payload = schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises many kinds on corrupt input
            raise MalformedEventError(
                f"corrupt {writer.event_type} v{writer.version} body: {type(exc).__name__}: {exc}"
            ) from None
        if buf.tell() != len(data):
            raise MalformedEventError(
                f"{len(data) - buf.tell()} trailing bytes after the "
                f"{writer.event_type} v{writer.version} body"
            )
        if not isinstance(payload, dict):
            raise MalformedEventError(f"{writer.event_type} body is not a record")
        return Decoded(writer.event_type, writer.version, payload)
