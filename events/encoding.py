"""The codec a process reads and writes events with, built from its schema encoding.

Every codec reads both framings (single-object and the schema registry wire format), so a
topic can move from one to the other without a stop; ``SchemaEncoding.format`` chooses only
what it writes.
"""

from __future__ import annotations

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.settings import SchemaEncoding


def make_codec(catalogue: Catalogue, encoding: SchemaEncoding | None = None) -> AvroCodec:
    """The codec for ``catalogue`` writing ``encoding``'s format (single-object by default)."""
    del encoding  # the registry framing is wired in by the schema registry work (#20)
    return AvroCodec(catalogue)
