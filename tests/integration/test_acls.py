"""``choreo topics apply`` grants the catalogue's least-privilege ACLs on a broker with an
authorizer, reports drift, and the broker then enforces them; a broker without one is
skipped, not failed.

The command runs as the user runs it (a process of the ``choreo`` script) with the admin
principal's settings; each test has its own TOPIC_PREFIX, so its topics, groups and ACL
drift are its own on the module's secured broker.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
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
from infra.broker import BrokerSpec, down, private_spec, up
from tests.support import run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]

SERVICES = ("orders", "inventory", "payments", "shipping", "notifications", "query", "analytics")


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerSpec]:
    """A secured broker (SASL_SSL, SCRAM, StandardAuthorizer) with one principal per service."""
    spec = private_spec(tmp_path_factory.mktemp("secure"), secure=True, principals=SERVICES)
    try:
        up(spec)
        yield spec
    finally:
        down(spec)


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


def admin_of(spec: BrokerSpec) -> AdminClient:
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
    secure_broker: BrokerSpec, tmp_path: Path
) -> None:
    prefix = unique("acl") + "."
    env = cli_env(secure_broker.environment("admin"), tmp_path, prefix)
    wanted = desired_acls(Catalogue.load().prefixed(prefix).topics.values(), prefix)

    status, first = apply_json(env)
    assert status == 0
    assert set(first["created"]) | set(first["unchanged"]) == set(wanted)
    assert first["extra"] == []

    status, second = apply_json(env)
    assert status == 0
    assert second == {"created": [], "unchanged": wanted, "extra": []}

    removed = Acl("User:orders", "TOPIC", "LITERAL", f"{prefix}orders.events", "WRITE")
    admin = admin_of(secure_broker)
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


async def test_with_the_acls_orders_may_write_only_its_topic(
    secure_broker: BrokerSpec, tmp_path: Path
) -> None:
    prefix = unique("enforce") + "."
    env = cli_env(secure_broker.environment("admin"), tmp_path, prefix)
    assert choreo(env, "topics", "apply")[0] == 0

    # Idempotent, as every choreo producer: no IDEMPOTENT_WRITE on the cluster is granted.
    options = secure_broker.connection("orders").client_options()
    producer = AIOKafkaProducer(**options, enable_idempotence=True, request_timeout_ms=10000)
    await producer.start()
    try:
        landed = await producer.send_and_wait(f"{prefix}orders.events", b"ok", key=b"o-1")
        assert landed.offset >= 0
        with pytest.raises(KafkaError) as refused:
            await producer.send_and_wait(f"{prefix}payments.events", b"forged", key=b"o-1")
        assert "Authorization" in type(refused.value).__name__, repr(refused.value)
    finally:
        await producer.stop()
