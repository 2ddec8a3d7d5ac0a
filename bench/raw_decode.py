"""The raw side's decoding of the schema registry wire format, as a plain fastavro program
written against a registry does it, without choreo's codec.

A value is ``00`` + the writer schema's 4-byte big-endian registry id + the schemaless Avro
body. The writer schema is fetched from the registry's Confluent-compatible API
(``GET /schemas/ids/{id}``) the first time its id is met, parsed once and kept by id (the
cache every registry client keeps); the body is read with it as it was written, with no
resolution to another version (the benchmarks write the version they read). The standard
library's HTTP client: ``bench.raw_read`` processes import nothing of the project for it.

Hand-written rather than confluent-kafka's ``AvroDeserializer``: that one is a second Kafka
client's (librdkafka's) serializer with its own registry client; the raw side stays aiokafka
and fastavro, the libraries choreo itself reads with.
"""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader

MAGIC = 0
HEADER = 5  # the magic byte and the 4-byte id


class Decoder(Protocol):
    """What the raw sides decode values with: choreo's ``AvroCodec`` or a ``RegistryDecoder``."""

    def decode(self, value: bytes) -> Any: ...


class RegistryDecoder:
    """``decode(value)`` of registry-framed values, writer schemas cached by id."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._schemas: dict[int, Any] = {}

    def decode(self, value: bytes) -> Any:
        if len(value) < HEADER or value[0] != MAGIC:
            raise ValueError(f"not the schema registry wire format: {value[:HEADER]!r}")
        schema_id = int.from_bytes(value[1:HEADER], "big")
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self._schemas[schema_id] = self._fetch(schema_id)
        body = io.BytesIO(value)
        body.seek(HEADER)
        return schemaless_reader(body, schema, None)

    def _fetch(self, schema_id: int) -> Any:
        with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}", timeout=10) as r:
            text = json.loads(r.read())["schema"]
        return parse_schema(json.loads(text))
