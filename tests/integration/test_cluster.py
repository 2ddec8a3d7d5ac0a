"""The local three-node KRaft cluster (infra.cluster) with real jars: topics applied on it
are replicated three ways with min.insync.replicas=2, and an acks=all write still succeeds
after the leader of its partition is SIGKILLed; the node restarts and catches up."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from events.catalogue import TopicSpec
from events.kafka import KafkaConnection, admin_client, reliable_producer, stop_quietly
from events.topics import apply_topics
from infra.cluster import cluster_status, down_cluster, private_cluster, up_cluster
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def _partitions(kafka: KafkaConnection, topic: str) -> list[dict[str, Any]]:
    admin = admin_client(kafka, client_id=unique("describe"))
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        return sorted(described["partitions"], key=lambda p: p["partition"])
    finally:
        await admin.close()


async def _configs(kafka: KafkaConnection, topic: str) -> dict[str, str]:
    admin = admin_client(kafka, client_id=unique("configs"))
    try:
        await admin.start()
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        (resource,) = response.to_object()["resources"]
        return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    finally:
        await admin.close()


async def test_cluster_keeps_acknowledged_writes_when_a_leader_dies(tmp_path):
    spec = private_cluster(tmp_path / "cluster")
    try:
        started = await asyncio.to_thread(up_cluster, spec)
        assert started.brokers == [1, 2, 3]
        assert started.controller in (1, 2, 3)
        kafka = spec.connection()
        topic = unique("replicated")

        report = await apply_topics(kafka, [TopicSpec(topic, 3, -1, (), {})], dead_letters=False)
        assert report.created == [topic]
        partitions: list[dict[str, Any]] = []

        async def described() -> bool:  # a new topic's metadata reaches every node in time
            partitions[:] = await _partitions(kafka, topic)
            return len(partitions) == 3

        await eventually(described, deadline_s=30, what="the new topic's three partitions")
        assert [len(p["replicas"]) for p in partitions] == [3, 3, 3]
        await eventually(
            lambda: _all_in_sync(kafka, topic, 3), deadline_s=60, what="ISR of 3 after creation"
        )
        configs = await _configs(kafka, topic)
        assert configs["min.insync.replicas"] == "2"
        assert configs["unclean.leader.election.enable"] == "false"

        leader = partitions[0]["leader"]
        victim = spec.nodes[leader - 1]
        pid = cluster_status(spec).nodes[leader - 1].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(
            lambda: not cluster_status(spec).nodes[leader - 1].running,
            what=f"node {victim.node_id} gone",
        )

        producer = reliable_producer(kafka, client_id=unique("acks-all"))
        try:
            await producer.start()
            sent = await producer.send_and_wait(topic, b"survives", key=b"k", partition=0)
        finally:
            await stop_quietly(producer)
        assert sent.offset >= 0
        after = await _partitions(kafka, topic)
        assert after[0]["leader"] != leader
        assert leader not in after[0]["isr"]

        await asyncio.to_thread(up_cluster, spec)  # restarts the missing node only
        await eventually(lambda: _all_in_sync(kafka, topic, 3), deadline_s=90, what="ISR back to 3")
        assert cluster_status(spec).under_replicated == []
    finally:
        await asyncio.to_thread(down_cluster, spec)
    assert not any(node.running for node in cluster_status(spec).nodes)


async def _all_in_sync(kafka: KafkaConnection, topic: str, replicas: int) -> bool:
    try:
        partitions = await _partitions(kafka, topic)
    except Exception:  # the metadata is moving while a node comes back
        return False
    return all(len(p["isr"]) == replicas for p in partitions)
