"""A faust codec backed by the platform's Avro codec: the same contracts, the same framings.

The platform codec (``events.encoding.make_codec``) reads single-object encoding and the
schema registry wire format alike, so analytics counts a topic while it migrates.

Decoding never raises. Faust acknowledges a message whose value fails to decode and throws
the error into the agent's stream, which kills the agent; analytics instead gets an
``Undecodable`` value in the message's place, counts it and moves on, and the message is
acknowledged in order like any other.

A registry outage is not the event's fault: a registry-framed value whose schema id this
process has not seen yet, while the registry cannot be asked, is retried here until the
registry answers. Faust's codec interface is synchronous, so the worker stalls meanwhile
(its consumer may be rebalanced out and re-read the uncommitted tail, as after any stall);
turning it into ``Undecodable``, or letting it escape (faust would acknowledge the message),
would lose the event from the counts. Ids already seen never reach the registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.serializers.codecs import Codec

from events.codec import AvroCodec, CodecError, Decoded
from events.schema_registry import RegistryUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Undecodable:
    error_type: str
    error: str


class PlatformAvroCodec(Codec):
    def __init__(self, codec: AvroCodec, wait: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.codec = codec
        self._wait = wait

    def _loads(self, s: bytes) -> Decoded | Undecodable:
        while True:
            try:
                return self.codec.decode(s)
            except CodecError as exc:
                return Undecodable(type(exc).__name__, str(exc))
            except RegistryUnavailable as exc:
                log.warning("analytics waits for the schema registry: %s", exc.reason)
                self._wait(exc.retry_after_s)

    def _dumps(self, s: Any) -> bytes:
        if not isinstance(s, Decoded):
            raise TypeError(f"expected a Decoded event, got {type(s).__name__}")
        return self.codec.encode(s.event_type, s.payload, s.writer_version)
