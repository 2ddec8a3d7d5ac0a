"""A faust codec backed by the platform's Avro codec: the same contracts, the same framings.

The platform codec (``events.encoding.make_codec``) reads single-object encoding and the
schema registry wire format alike, so analytics counts a topic while it migrates.

Decoding never raises. Faust throws a decode error into the agent's stream, which kills
the agent; analytics instead gets an ``Undecodable`` value in the message's place, counts
it and moves on, and the message is acknowledged in order like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.serializers.codecs import Codec

from events.codec import AvroCodec, CodecError, Decoded


@dataclass(frozen=True, slots=True)
class Undecodable:
    error_type: str
    error: str


class PlatformAvroCodec(Codec):
    def __init__(self, codec: AvroCodec) -> None:
        super().__init__()
        self.codec = codec

    def _loads(self, s: bytes) -> Decoded | Undecodable:
        try:
            return self.codec.decode(s)
        except CodecError as exc:
            return Undecodable(type(exc).__name__, str(exc))

    def _dumps(self, s: Any) -> bytes:
        if not isinstance(s, Decoded):
            raise TypeError(f"expected a Decoded event, got {type(s).__name__}")
        return self.codec.encode(s.event_type, s.payload, s.writer_version)
