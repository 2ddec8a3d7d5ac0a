"""``choreo topics apply --raise-partitions`` on the session broker: a topic with fewer
partitions than the catalogue says is drift until asked, then raised (with its ``.dlq``
twin) and the ordering note printed once; a topic with more is never lowered. On a
three-node cluster the new partitions are replicated as the old ones."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest

from events.catalogue import Catalogue, TopicSpec
from events.kafka import KafkaConnection, admin_client, reliable_producer, stop_quietly
from events.topics import apply_topics
from infra.cluster import down_cluster, private_cluster, up_cluster
from tests.support import eventually, run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]


async def _partition_count(kafka: KafkaConnection, topic: str) -> int:
    admin = admin_client(kafka, client_id=unique("describe"))
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


async def test_partitions_are_raised_only_when_asked_and_never_lowered(
    kafka_bootstrap: str,
) -> None:
    kafka = KafkaConnection(kafka_bootstrap)
    topic = unique("raise")
    twin = f"{topic}.dlq"
    await apply_topics(kafka, [TopicSpec(topic, 1, -1, (), {})])
    three = [TopicSpec(topic, 3, -1, (), {})]

    drift = await apply_topics(kafka, three)
    assert drift.raised == []
    assert [d.split(":", 1)[0] for d in drift.differences] == [topic, twin]
    assert all("1 partitions, catalogue says 3" in d for d in drift.differences)
    assert all("--raise-partitions" in d for d in drift.differences)
    assert await _partition_count(kafka, topic) == 1

    raised = await apply_topics(kafka, three, raise_partitions=True)
    assert raised.raised == [f"{topic}: 1 -> 3 partitions", f"{twin}: 1 -> 3 partitions"]
    assert (raised.differences, raised.unchanged) == ([], [])
    for name in (topic, twin):

        async def at_three(name: str = name) -> bool:
            return await _partition_count(kafka, name) == 3

        await eventually(at_three, what=f"{name} at 3 partitions")

    # The new partitions take writes: a key the default partitioner now puts on partition
    # 1 or 2 (with one partition every key was on 0) lands there.
    producer = reliable_producer(kafka, client_id=unique("after-raise"))
    try:
        await producer.start()
        landed = {
            (await producer.send_and_wait(topic, b"x", key=f"k{i}".encode())).partition
            for i in range(12)
        }
    finally:
        await stop_quietly(producer)
    assert landed - {0}, landed

    again = await apply_topics(kafka, three, raise_partitions=True)
    assert (again.raised, again.differences, again.unchanged) == ([], [], [topic, twin])

    lower = await apply_topics(kafka, [TopicSpec(topic, 2, -1, (), {})], raise_partitions=True)
    assert lower.raised == []
    assert len(lower.differences) == 2
    assert all("3 partitions, catalogue says 2" in d for d in lower.differences)
    assert all("Kafka cannot lower a topic's partitions" in d for d in lower.differences)
    assert await _partition_count(kafka, topic) == 3


async def test_cli_raises_the_catalogues_topics_and_says_once_what_it_does_to_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = unique("raisecli") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    specs = list(catalogue.topics.values())
    # As an older deployment left them: one partition each.
    await apply_topics(
        KafkaConnection(kafka_bootstrap), [dataclasses.replace(s, partitions=1) for s in specs]
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")},
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "VAR_DIR": str(tmp_path),
    }

    def choreo(*args: str) -> tuple[int, str, str]:
        done = run_module("services.tools.stack", "topics", *args, env=env, timeout=120)
        return done.returncode, done.stdout, done.stderr

    status, out, err = choreo("apply")
    assert status == 1, (out, err)
    differs = [line for line in out.splitlines() if line.startswith("DIFFERS")]
    assert len(differs) == 2 * len(specs), out  # each topic and its .dlq twin
    assert "note:" not in out

    status, out, err = choreo("apply", "--raise-partitions")
    assert status == 0, (out, err)
    raised = [line for line in out.splitlines() if line.startswith("raised")]
    assert len(raised) == 2 * len(specs), out
    assert f"raised    {prefix}orders.events: 1 -> 3 partitions" in raised
    assert out.count("note: key ordering") == 1, out
    assert "Kafka cannot lower a topic's partitions." in out
    assert "DIFFERS" not in out and "Traceback" not in err

    status, out, err = choreo("apply", "--raise-partitions", "--output", "json")
    assert status == 0, (out, err)
    doc = json.loads(out)
    assert doc["raised"] == [] and doc["differences"] == [] and "note" not in doc
    assert len(doc["unchanged"]) == 2 * len(specs)

    status, out, err = choreo("list", "--raise-partitions")
    assert status == 2 and out == ""
    assert err == "choreo: error: --raise-partitions goes with `topics apply`\n"


async def test_raised_partitions_on_a_cluster_have_three_replicas(tmp_path: Path) -> None:
    spec = private_cluster(tmp_path / "cluster")
    try:
        await asyncio.to_thread(up_cluster, spec)
        kafka = spec.connection()
        topic = unique("raise-replicated")
        await apply_topics(kafka, [TopicSpec(topic, 1, -1, (), {})], dead_letters=False)
        three = [TopicSpec(topic, 3, -1, (), {})]
        raised = await apply_topics(kafka, three, dead_letters=False, raise_partitions=True)
        assert raised.raised == [f"{topic}: 1 -> 3 partitions"]

        async def replicas() -> list[int] | None:
            admin = admin_client(kafka, client_id=unique("describe"))
            try:
                await admin.start()
                (described,) = await admin.describe_topics([topic])
            finally:
                await admin.close()
            counts = [len(p["replicas"]) for p in described["partitions"]]
            return counts if len(counts) == 3 else None

        assert await eventually(replicas, what="three partitions") == [3, 3, 3]
        # Replicated as the catalogue wants: the next apply finds nothing to report.
        again = await apply_topics(kafka, three, dead_letters=False)
        assert (again.differences, again.unchanged) == ([], [topic])
    finally:
        await asyncio.to_thread(down_cluster, spec)
