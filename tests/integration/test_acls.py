"""``choreo topics apply`` grants the catalogue's least-privilege ACLs on a broker with an
authorizer, reports drift, and the broker then enforces them; a broker without one is
skipped, not failed.

The command runs as the user runs it (a process of the ``choreo`` script) with the admin
principal's settings; each test has its own TOPIC_PREFIX, so its topics, groups and ACL
drift are its own on the session's secured broker (``secure_kafka``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from events.acls import Acl, desired_acls
from events.catalogue import Catalogue
from tests.conftest import SecureKafka
from tests.support import run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]


def choreo(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = run_module("services.tools.stack", *args, env=env, timeout=120)
    return done.returncode, done.stdout, done.stderr


def cli_env(base: dict[str, str], tmp_path: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return {**env, **base, "TOPIC_PREFIX": prefix, "VAR_DIR": str(tmp_path)}


def apply_json(env: dict[str, str]) -> tuple[int, dict[str, list[Acl]]]:
    status, out, err = choreo(env, "topics", "apply", "--output", "json")
    assert "Traceback" not in err, err
    doc = json.loads(out)["acls"]
    assert doc["authorizer"] is True
    acls = {key: [Acl(**row) for row in doc[key]] for key in ("created", "unchanged", "extra")}
    return status, acls


def binding(acl: Acl, kind: type[AclBinding] = AclBinding) -> AclBinding:
    return kind(
        ResourceType[acl.resource_type],
        acl.resource,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        acl.host,
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def admin_of(spec: SecureKafka) -> AdminClient:
    # librdkafka's log lines (the broker going away at teardown) go to logging, not stderr.
    config = {**spec.connection("admin").librdkafka_config(), "logger": logging.getLogger(__name__)}
    return AdminClient(config)


def test_without_an_authorizer_acls_are_skipped(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = cli_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}, tmp_path, unique("noacl") + ".")
    status, out, err = choreo(env, "topics", "apply")
    assert status == 0, (out, err)
    assert "ACLs: broker has no authorizer (skipped)" in out.splitlines()
    status, out, _ = choreo(env, "topics", "apply", "--output", "json")
    assert status == 0
    assert json.loads(out)["acls"] == {
        "authorizer": False,
        "created": [],
        "unchanged": [],
        "extra": [],
    }


def test_apply_creates_the_acls_then_reports_drift(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    prefix = unique("acl") + "."
    env = cli_env(secure_kafka.environment("admin"), tmp_path, prefix)
    wanted = desired_acls(Catalogue.load().prefixed(prefix).topics.values(), prefix)

    status, first = apply_json(env)
    assert status == 0
    assert set(first["created"]) | set(first["unchanged"]) == set(wanted)
    assert first["extra"] == []

    status, second = apply_json(env)
    assert status == 0
    assert second == {"created": [], "unchanged": wanted, "extra": []}

    # only the admin principal may read and grant ACLs: the operator is told so in one line
    as_operator = cli_env(secure_kafka.environment("operator"), tmp_path, prefix)
    status, out, err = choreo(as_operator, "topics", "apply")
    assert status == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and "User:operator may not" in err, err
    assert "admin principal" in err

    removed = Acl("User:orders", "TOPIC", "LITERAL", f"{prefix}orders.events", "WRITE")
    admin = admin_of(secure_kafka)
    for future in admin.delete_acls(
        [binding(removed, AclBindingFilter)], request_timeout=30
    ).values():
        assert future.result(timeout=35)  # the one binding it deleted
    status, out, err = choreo(env, "topics", "apply")
    assert status == 0, (out, err)
    assert f"missing   ACL {removed} (created)" in out.splitlines()

    stray = Acl("User:orders", "TOPIC", "LITERAL", f"{prefix}payments.events", "WRITE")
    for future in admin.create_acls([binding(stray)], request_timeout=30).values():
        future.result(timeout=35)
    status, third = apply_json(env)
    assert status == 1  # drift, as a topic that differs from the catalogue
    assert third["extra"] == [stray] and third["created"] == []


async def test_with_the_acls_each_principal_writes_and_joins_only_its_own(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    prefix = unique("enforce") + "."
    env = cli_env(secure_kafka.environment("admin"), tmp_path, prefix)
    assert choreo(env, "topics", "apply")[0] == 0

    # Idempotent, as every choreo producer: no IDEMPOTENT_WRITE on the cluster is granted.
    await can_write(secure_kafka, "orders", f"{prefix}orders.events")
    await cannot_write(secure_kafka, "orders", f"{prefix}payments.events")
    # a consumer dead-letters to the twin of what it reads, and writes nothing it reads
    await can_write(secure_kafka, "inventory", f"{prefix}orders.events.dlq")
    await cannot_write(secure_kafka, "inventory", f"{prefix}orders.events")

    options = secure_kafka.connection("orders").client_options()
    intruder = AIOKafkaConsumer(
        f"{prefix}orders.events", **options, group_id=f"{prefix}inventory", request_timeout_ms=10000
    )
    try:
        with pytest.raises(KafkaError) as refused:
            await intruder.start()  # joins the group before it returns
        assert "GroupAuthorization" in type(refused.value).__name__, repr(refused.value)
    finally:
        await intruder.stop()


async def can_write(secure_kafka: SecureKafka, principal: str, topic: str) -> None:
    async with _producer(secure_kafka, principal) as producer:
        landed = await producer.send_and_wait(topic, b"ok", key=b"k-1")
        assert landed.offset >= 0


async def cannot_write(secure_kafka: SecureKafka, principal: str, topic: str) -> None:
    async with _producer(secure_kafka, principal) as producer:
        with pytest.raises(KafkaError) as refused:
            await producer.send_and_wait(topic, b"forged", key=b"k-1")
        assert "TopicAuthorization" in type(refused.value).__name__, repr(refused.value)


@contextlib.asynccontextmanager
async def _producer(secure_kafka: SecureKafka, principal: str) -> AsyncIterator[AIOKafkaProducer]:
    options = secure_kafka.connection(principal).client_options()
    producer = AIOKafkaProducer(**options, enable_idempotence=True, request_timeout_ms=10000)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
