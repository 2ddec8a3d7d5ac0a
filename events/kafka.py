"""Kafka client construction in one place, so every producer keeps the same guarantees."""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError


def reliable_producer(
    bootstrap: str, *, client_id: str, request_timeout_ms: int = 15000, **extra: Any
) -> AIOKafkaProducer:
    """Idempotent, acks=all: a retry never duplicates or reorders within a partition."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": request_timeout_ms,
    }
    options.update(extra)
    return AIOKafkaProducer(**options)


def manual_consumer(bootstrap: str, *, group_id: str, **extra: Any) -> AIOKafkaConsumer:
    """Offsets are committed by the caller, after its database commit."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
    }
    options.update(extra)
    return AIOKafkaConsumer(**options)


async def stop_quietly(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stops clients on the way out: a broker that is gone must not fail a close."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(KafkaError, OSError):
                await client.stop()
