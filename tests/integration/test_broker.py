"""The local broker launcher against a real Kafka started from the Maven jars."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.broker import BrokerError, BrokerSpec, down, status, up

pytestmark = pytest.mark.integration

TOPIC_ALREADY_EXISTS = 36


async def _create_topic(bootstrap: str, topic: str) -> int:
    """The broker's error code for creating ``topic`` (0 = created)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    (error_code,) = [error for name, error, *_ in response.topic_errors if name == topic]
    return int(error_code)


async def _cluster(bootstrap: str) -> tuple[list[str], int]:
    """The topic names and the number of brokers in a metadata answer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return topics, len(cluster["brokers"])


async def test_session_broker_answers_metadata(kafka_bootstrap: str) -> None:
    _, brokers = await _cluster(kafka_bootstrap)

    assert brokers == 1


async def test_up_starts_a_broker_and_again_is_a_no_op(
    broker_factory: Callable[[], BrokerSpec],
) -> None:
    spec = broker_factory()
    first = status(spec)

    again = up(spec)

    assert first.running and first.pid is not None
    assert again.pid == first.pid
    assert again.bootstrap == spec.bootstrap == f"127.0.0.1:{spec.port}"
    _, brokers = await _cluster(spec.bootstrap)
    assert brokers == 1


async def test_topics_survive_down_and_up(broker_factory: Callable[[], BrokerSpec]) -> None:
    spec = broker_factory()
    topic = f"survivor-{uuid.uuid4().hex}"
    assert await _create_topic(spec.bootstrap, topic) == 0
    old_pid = status(spec).pid

    assert down(spec) is True
    stopped = status(spec)
    assert not stopped.running and stopped.pid is None
    assert down(spec) is False

    restarted = up(spec)
    assert restarted.running and restarted.pid != old_pid
    topics, _ = await _cluster(spec.bootstrap)
    assert topic in topics
    assert await _create_topic(spec.bootstrap, topic) == TOPIC_ALREADY_EXISTS


def test_a_broker_that_dies_during_start_up_is_reported(
    broker_factory: Callable[[], BrokerSpec],
) -> None:
    spec = broker_factory()
    down(spec)
    meta = spec.data_dir / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=2"))

    with pytest.raises(BrokerError) as failure:
        up(spec, timeout=60)

    message = str(failure.value)
    assert "\n" not in message
    assert "node id" in message and str(spec.log_file) in message
    assert not status(spec).running
