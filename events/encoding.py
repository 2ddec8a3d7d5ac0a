"""The codec a process reads and writes events with, built from its schema encoding.

Every codec reads both framings (single-object and the schema registry wire format), so a
topic can move from one to the other without a stop; ``SchemaEncoding.format`` chooses only
what it writes. Registry ids are read through ``SchemaEncoding.registry_url`` either way.
"""

from __future__ import annotations

from events.catalogue import Catalogue
from events.codec import AvroCodec, RegistryFraming
from events.settings import SchemaEncoding


def make_codec(catalogue: Catalogue, encoding: SchemaEncoding | None = None) -> AvroCodec:
    """The codec for ``catalogue`` writing ``encoding``'s format (single-object by default).

    In registry format this asks the registry, once, for the id of every catalogued version
    (so a process whose schemas are not registered stops at start, not at its first event):
    ``events.schema_registry.RegistryError`` names ``choreo schemas release`` when one is
    missing, ``RegistryUnavailable`` when the registry cannot be reached.
    """
    encoding = encoding or SchemaEncoding()
    if encoding.format == "registry":
        from events.schema_registry import writer_ids  # httpx: registry processes only

        framing = RegistryFraming(
            encoding.registry_url, writer_ids(catalogue, encoding.registry_url)
        )
        return AvroCodec(catalogue, framing, framing)
    return AvroCodec(catalogue, registry=RegistryFraming(encoding.registry_url))
