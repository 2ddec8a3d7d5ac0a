"""Topic provisioning from the declarative catalogue: create what is missing, report drift,
and, when asked, raise a topic's partitions to the catalogue's count (never lower them:
Kafka cannot)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from events.catalogue import Replication, TopicSpec, dead_letter_topic
from events.kafka import KafkaConnection, admin_client

TOPIC_ALREADY_EXISTS = 36
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31


class TopicError(Exception):
    """The broker refused to create a topic."""


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)  # "<topic>: 1 -> 3 partitions"


PARTITIONS_NOT_LOWERED = "Kafka cannot lower a topic's partitions"
RAISE_HINT = "choreo topics apply --raise-partitions raises them"


def with_dead_letters(specs: Sequence[TopicSpec]) -> list[TopicSpec]:
    """Every event topic gets a ``.dlq`` twin with the same partitions, kept forever."""
    out = list(specs)
    for spec in specs:
        out.append(TopicSpec(dead_letter_topic(spec.name), spec.partitions, -1, (), {}))
    return out


def _configs(spec: TopicSpec, replicated: dict[str, str]) -> dict[str, str]:
    return {"retention.ms": str(spec.retention_ms), **replicated, **spec.configs}


async def apply_topics(
    kafka: KafkaConnection,
    specs: Sequence[TopicSpec],
    *,
    dead_letters: bool = True,
    replication: Replication | None = None,
    raise_partitions: bool = False,
) -> TopicReport:
    """Idempotent: creates missing topics, leaves existing ones alone and reports drift.
    With ``raise_partitions`` a topic with fewer partitions than the catalogue says gets
    more (``report.raised``); one with more stays drift. On a cluster of at least
    ``replication.replication_factor`` brokers topics are replicated (:class:`Replication`,
    default 3 replicas, min.insync.replicas=2), on a smaller one they get one replica."""
    wanted = with_dead_letters(specs) if dead_letters else list(specs)
    replication = replication if replication is not None else Replication()
    report = TopicReport()
    admin = admin_client(kafka, client_id="choreo-topics")
    try:
        await admin.start()  # inside: a client that failed to start is closed too
        brokers = len((await admin.describe_cluster()).get("brokers", []))
        replicated = brokers >= replication.replication_factor
        factor = replication.replication_factor if replicated else 1
        extra = replication.configs() if replicated else {}
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, factor, topic_configs=_configs(s, extra))
                    for s in missing
                ]
            )
            for name, code, message in _topic_errors(response):
                if code == TOPIC_AUTHORIZATION_FAILED:
                    raise TopicAuthorizationFailedError(name)  # events.kafka_auth words it
                if code == CLUSTER_AUTHORIZATION_FAILED:
                    raise ClusterAuthorizationFailedError()
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise TopicError(f"cannot create topic {name}: error {code} {message or ''}")
            report.created = [s.name for s in missing]
        present = [s for s in wanted if s.name in existing]
        if present:
            report.differences, short = await _drift(admin, present, factor, extra)
            if raise_partitions and short:
                report.raised = await _raise(admin, short)
            else:
                report.differences += [
                    f"{name}: {have} partitions, catalogue says {want} ({RAISE_HINT})"
                    for name, (have, want) in short.items()
                ]
            drifted = {d.split(":", 1)[0] for d in report.differences + report.raised}
            report.unchanged = [s.name for s in present if s.name not in drifted]
    finally:
        await admin.close()
    return report


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    out = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((name, int(code), message))
    return out


async def _drift(
    admin: AIOKafkaAdminClient,
    specs: Sequence[TopicSpec],
    factor: int,
    replicated: dict[str, str],
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The differences from the catalogue, and apart from them the topics with fewer
    partitions than it says (name: (partitions, catalogue's)), which can be raised."""
    differences = []
    short: dict[str, tuple[int, int]] = {}
    described = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    actual_configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            actual_configs[resource["resource_name"]] = {
                e["config_names"]: e["config_value"] for e in resource["config_entries"]
            }
    for spec in specs:
        described_partitions = described.get(spec.name, {}).get("partitions", [])
        partitions = len(described_partitions)
        if partitions < spec.partitions:
            short[spec.name] = (partitions, spec.partitions)
        elif partitions > spec.partitions:
            differences.append(
                f"{spec.name}: {partitions} partitions, catalogue says {spec.partitions} "
                f"({PARTITIONS_NOT_LOWERED})"
            )
        replicas = min((len(p.get("replicas", [])) for p in described_partitions), default=0)
        if factor > 1 and replicas < factor:
            differences.append(f"{spec.name}: {replicas} replicas, catalogue says {factor}")
        actual = actual_configs.get(spec.name, {})
        for key, value in _configs(spec, replicated).items():
            if actual.get(key) != value:
                differences.append(f"{spec.name}: {key}={actual.get(key)}, catalogue says {value}")
    return differences, short


async def _raise(admin: AIOKafkaAdminClient, short: dict[str, tuple[int, int]]) -> list[str]:
    """Raises each topic to its catalogue count, one request a topic so that a refusal
    names its topic (the broker assigns the new partitions' replicas as the topic's)."""
    raised: list[str] = []
    for name, (have, want) in short.items():
        try:
            await admin.create_partitions({name: NewPartitions(want)})
        except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
            raise  # events.kafka_auth words them
        except KafkaError as exc:
            raise TopicError(
                f"cannot raise {name} from {have} to {want} partitions: "
                f"{type(exc).__name__} {exc}"
                + (f" (raised before it: {', '.join(raised)})" if raised else "")
            ) from None
        raised.append(f"{name}: {have} -> {want} partitions")
    return raised


async def partitions_of(kafka: KafkaConnection, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the topics; raises TopicError for a topic that does not exist."""
    admin = admin_client(kafka, client_id="choreo-metadata")
    try:
        await admin.start()  # inside: a client that failed to start is closed too
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    by_name = {t["topic"]: t for t in described}
    out: list[TopicPartition] = []
    for topic in topics:
        info = by_name.get(topic)
        if info is not None and info.get("error_code") == TOPIC_AUTHORIZATION_FAILED:
            raise TopicAuthorizationFailedError(topic)  # events.kafka_auth words it
        if info is None or info.get("error_code") or not info.get("partitions"):
            raise TopicError(f"topic {topic} does not exist (run `choreo topics apply`)")
        out.extend(
            TopicPartition(topic, p["partition"])
            for p in sorted(info["partitions"], key=lambda p: p["partition"])
        )
    return out
