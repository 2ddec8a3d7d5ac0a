"""Publishing events from outside a service (CLI, demo, tools): validate all, then send.

Nothing is sent unless every record is valid, so a bad file publishes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError

from events.codec import AvroCodec, CodecError
from events.envelope import Envelope, new_event_id, utcnow
from events.kafka import reliable_producer
from events.telemetry import current_traceparent, root_span


class PublishError(Exception):
    """A record that cannot be published; the message names the record."""


@dataclass(frozen=True)
class Draft:
    event_type: str
    payload: Mapping[str, Any]
    key: str
    event_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Published:
    event_id: str
    event_type: str
    topic: str
    partition: int
    offset: int
    key: str


@dataclass(frozen=True)
class _Ready:
    topic: str
    value: bytes
    envelope: Envelope


def prepare(codec: AvroCodec, drafts: Sequence[Draft], producer: str) -> list[_Ready]:
    """Validates and encodes every draft; raises PublishError at the first bad one."""
    ready = []
    for index, draft in enumerate(drafts, start=1):
        where = f"record {index} ({draft.event_type})"
        try:
            codec.validate(draft.event_type, draft.payload)
            value = codec.encode(draft.event_type, draft.payload)
            topic = codec.catalogue.topic_for(draft.event_type)
        except (CodecError, Exception) as exc:
            raise PublishError(f"{where}: {exc}") from None
        if not draft.key:
            raise PublishError(f"{where}: empty key")
        event_id = draft.event_id or new_event_id()
        with root_span(f"publish {draft.event_type}", {"choreo.event_id": event_id}):
            traceparent = current_traceparent()
        env = Envelope(
            event_id=event_id,
            event_type=draft.event_type,
            schema_version=codec.catalogue.latest(draft.event_type).version,
            occurred_at=draft.occurred_at or utcnow(),
            producer=producer,
            correlation_id=draft.correlation_id or event_id,
            key=draft.key,
            causation_id=draft.causation_id,
            traceparent=traceparent,
        )
        ready.append(_Ready(topic, value, env))
    return ready


async def publish(
    codec: AvroCodec, bootstrap: str, drafts: Sequence[Draft], *, producer: str = "choreo-cli"
) -> list[Published]:
    """Validate all, then send all with the idempotent producer and wait for every ack."""
    ready = prepare(codec, drafts, producer)
    kafka = reliable_producer(bootstrap, client_id=producer)
    try:
        await kafka.start()
        futures = [
            await kafka.send(
                r.topic, r.value, key=r.envelope.key.encode(), headers=r.envelope.to_headers()
            )
            for r in ready
        ]
        out = []
        for r, fut in zip(ready, futures, strict=True):
            md = await fut
            out.append(
                Published(
                    r.envelope.event_id,
                    r.envelope.event_type,
                    md.topic,
                    md.partition,
                    md.offset,
                    r.envelope.key,
                )
            )
        return out
    except KafkaError as exc:
        raise PublishError(f"cannot publish to {bootstrap}: {exc}") from None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await kafka.stop()
