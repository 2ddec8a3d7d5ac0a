"""Avro encoding of event payloads, in either of two framings; both are always read.

- Avro single-object encoding (choreo's default): ``C3 01`` + the 8-byte CRC-64-AVRO
  fingerprint of the writer schema + the schemaless Avro body; the writer schema is found
  in the catalogue by fingerprint.
- The schema registry wire format (Confluent's, spoken by Apicurio's serializers, Kafka
  Connect, ksqlDB, Flink): ``00`` + the writer schema's 4-byte big-endian registry id + the
  body; the id is resolved through the registry, once per id per process.

The first byte tells them apart (``C3`` or ``00``), so a topic can hold both while its
producers move from one to the other. Either way the body is read with the writer schema
and resolved to the latest catalogued version of its type; a registry writer schema that is
not in the catalogue (a foreign producer's equivalent or compatible text of the same
record) is read as it is written and resolved the same way.

The framing of the registry format is written here rather than taken from confluent-kafka's
``AvroSerializer``: that one is synchronous, comes with librdkafka and its own registry
client, and would re-parse schemas that the catalogue already holds parsed; the format is
five bytes (see events.schema_registry for the client).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import LOGICAL_READERS

from events.avro.validate import Validator
from events.catalogue import Catalogue, CatalogueError, SchemaVersion, schema_fingerprint

if TYPE_CHECKING:
    from events.schema_registry import RegistryClient


class CodecError(Exception):
    """Bytes that cannot be turned into an event, or a payload that breaks its contract."""


class UnknownSchemaError(CodecError):
    """The writer schema's fingerprint is not in the catalogue, or its registry id names no
    schema (or one no event type of the catalogue is)."""


class UnregisteredSchema(CodecError):
    """A process writing the registry format has no registry id for the schema."""


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
_REGISTRY_MAGIC = b"\x00"
_REGISTRY_HEADER_LEN = 5


class SingleObjectFraming:
    def frame(self, schema: SchemaVersion, body: bytes) -> bytes:
        return _MAGIC + schema.fingerprint + body

    def writer_of(self, data: bytes, catalogue: Catalogue) -> tuple[SchemaVersion, int]:
        if len(data) < _HEADER_LEN:
            raise MalformedEventError(f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != _MAGIC:
            # (A first byte 00 is the registry framing's, read before this is tried.)
            raise MalformedEventError(f"bad magic {data[:2].hex()}, expected c301")
        fp = data[2:_HEADER_LEN]
        schema = catalogue.by_fingerprint(fp)
        if schema is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {fp.hex()}")
        return schema, _HEADER_LEN


class RegistryFraming:
    """The schema registry wire format: ``00`` + 4-byte big-endian id + body.

    ``ids`` holds the registry id of each catalogued version this process writes (by
    fingerprint; filled at start-up by ``events.encoding.make_codec``); an id read that is
    not one of them is fetched from the registry at ``url`` once, and kept. Pickles as its
    url and ids (a replay sends the codec to reader processes): no client travels.
    """

    def __init__(self, url: str | None, ids: Mapping[bytes, int] | None = None) -> None:
        self.url = url
        self.ids = dict(ids or {})
        self._writers: dict[int, SchemaVersion] = {}
        self._client: RegistryClient | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (RegistryFraming, (self.url, self.ids))

    def frame(self, schema: SchemaVersion, body: bytes) -> bytes:
        schema_id = self.ids.get(schema.fingerprint)
        if schema_id is None:
            raise UnregisteredSchema(
                f"{schema.event_type} v{schema.version} has no schema registry id; run "
                "`choreo schemas release` with SCHEMA_FORMAT=registry"
            )
        return _REGISTRY_MAGIC + schema_id.to_bytes(4, "big") + body

    def writer_of(self, data: bytes, catalogue: Catalogue) -> tuple[SchemaVersion, int]:
        if len(data) < _REGISTRY_HEADER_LEN:
            raise MalformedEventError(
                f"{len(data)} bytes is shorter than the 5-byte schema registry header"
            )
        schema_id = int.from_bytes(data[1:_REGISTRY_HEADER_LEN], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = self._resolve(schema_id, catalogue)
        return writer, _REGISTRY_HEADER_LEN

    @property
    def cached_ids(self) -> frozenset[int]:
        """The ids whose writer schema this process holds (tests, diagnostics)."""
        return frozenset(self._writers)

    def _resolve(self, schema_id: int, catalogue: Catalogue) -> SchemaVersion:
        for fp, known in self.ids.items():  # one of ours: no need to ask
            if known == schema_id:
                ours = catalogue.by_fingerprint(fp)
                if ours is not None:
                    return ours
        return writer_schema(schema_id, self._fetch(schema_id), catalogue)

    def _fetch(self, schema_id: int) -> str:
        # Imported here: httpx is not loaded by processes that never meet a registry id.
        from events.schema_registry import (
            RegistryClient,
            RegistryError,
            RegistryRefused,
            RegistryUnavailable,
        )

        if self.url is None:
            raise RegistryUnavailable(f"none configured to read schema id {schema_id}")
        if self._client is None:
            self._client = RegistryClient(self.url)
        try:
            text = self._client.schema(schema_id)
        except RegistryRefused as exc:  # e.g. 401/403: it refuses this process, not the event
            raise RegistryUnavailable(str(exc)) from None
        except RegistryError as exc:  # e.g. a Protobuf or JSON schema: no Avro event
            raise UnknownSchemaError(f"schema id {schema_id}: {exc}") from None
        if text is None:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the registry at {self.url}")
        return text


def writer_schema(schema_id: int, text: str, catalogue: Catalogue) -> SchemaVersion:
    """The registry's schema ``schema_id`` as a writer of a catalogued event type: the
    catalogue's own version when the text is one (same canonical form), else the text
    parsed, standing for the type's latest version (what it is resolved to)."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise UnknownSchemaError(f"schema id {schema_id} is not JSON") from None
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise UnknownSchemaError(f"schema id {schema_id} is not an Avro record")
    fullname = str(raw.get("name", ""))
    if "." not in fullname and raw.get("namespace"):
        fullname = f"{raw['namespace']}.{fullname}"
    event_type = fullname.rsplit(".", 1)[-1]
    try:
        latest = catalogue.latest(event_type)
    except CatalogueError:
        raise UnknownSchemaError(
            f"schema id {schema_id} is {fullname}, no event type of the catalogue"
        ) from None
    expected = f"{latest.raw.get('namespace')}.{event_type}"
    if latest.raw.get("namespace") and fullname != expected:
        raise UnknownSchemaError(f"schema id {schema_id} is {fullname}, not {expected}")
    try:
        fp = schema_fingerprint(raw)
        ours = catalogue.by_fingerprint(fp)
        if ours is not None and ours.event_type == event_type:
            return ours
        parsed = parse_schema(raw)
    except Exception as exc:  # fastavro raises many kinds on a bad schema
        raise UnknownSchemaError(
            f"schema id {schema_id} is not a valid Avro schema: {type(exc).__name__}: {exc}"
        ) from None
    return SchemaVersion(event_type, latest.context, latest.version, raw, parsed, fp)


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


_SINGLE_OBJECT = SingleObjectFraming()


class AvroCodec:
    """Writes ``framing`` (single-object by default); reads both framings, registry ids
    through ``registry`` (none given: registry-framed events wait for a registry)."""

    def __init__(
        self,
        catalogue: Catalogue,
        framing: Framing | None = None,
        registry: RegistryFraming | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.framing: Framing = framing or _SINGLE_OBJECT
        if registry is None:
            registry = framing if isinstance(framing, RegistryFraming) else RegistryFraming(None)
        self.registry = registry
        self._validators: dict[bytes, Validator] = {}  # by fingerprint, compiled on first use
        _uuids_as_text()

    def __reduce__(self) -> tuple[Any, ...]:
        # Through __init__ again: a process the codec is sent to needs the uuid hook too.
        return (AvroCodec, (self.catalogue, self.framing, self.registry))

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
        """The event in ``data``, either framing. Raises a ``CodecError`` for bytes no
        contract reads, and ``RegistryUnavailable`` (not a ``CodecError``: nothing is wrong
        with the event) for a registry id not seen yet while the registry cannot be asked."""
        if data[:1] == _REGISTRY_MAGIC:
            writer, start = self.registry.writer_of(data, self.catalogue)
        else:
            writer, start = _SINGLE_OBJECT.writer_of(data, self.catalogue)
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
