"""The secured local broker (``choreo broker up --secure``) refuses whoever should not get in:
no TLS or SASL, a wrong password, a client that does not trust its CA, and - once
``choreo topics apply`` has granted the catalogue's ACLs - a service's principal writing a
topic that is not its own. Each refusal is checked beside the same client succeeding with the
right settings, so a broker that is merely down cannot pass for one that refuses."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from pydantic import SecretStr

from events.kafka import KafkaConnection
from infra.broker import up
from infra.tls import make_authority
from tests.conftest import SecureKafka
from tests.support import run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]


async def _connect(kafka: KafkaConnection) -> None:
    """Start and stop a producer: the bootstrap exchange (TLS, SASL, metadata) and no more."""
    producer = AIOKafkaProducer(**kafka.client_options(), request_timeout_ms=10_000)
    try:
        await producer.start()
    finally:
        await producer.stop()


async def _refused(kafka: KafkaConnection, caplog: pytest.LogCaptureFixture) -> str:
    """The reason aiokafka logged for refusing ``kafka`` at bootstrap (it raises only
    'Unable to bootstrap', the cause goes to its log)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await _connect(kafka)
    return "\n".join(r.getMessage() for r in caplog.records)


def _environ(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOPIC_PREFIX"))}
    env.update(variables)
    return env


async def test_a_service_principal_with_its_password_gets_in(secure_kafka: SecureKafka):
    kafka = secure_kafka.connection("orders")
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    await _connect(kafka)


async def test_a_plaintext_client_is_refused(
    secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture
):
    reason = await _refused(KafkaConnection(bootstrap=secure_kafka.bootstrap), caplog)
    assert "closed" in reason  # the TLS listener drops a plaintext Kafka request


async def test_tls_without_sasl_is_refused(secure_kafka: SecureKafka):
    anonymous = KafkaConnection(
        bootstrap=secure_kafka.bootstrap, security_protocol="SSL", ca_file=secure_kafka.ca_file
    )
    with pytest.raises(KafkaConnectionError):
        await _connect(anonymous)


async def test_a_wrong_password_is_refused(
    secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture
):
    wrong = dataclasses.replace(
        secure_kafka.connection("orders"), password=SecretStr(unique("not-the-password"))
    )
    reason = await _refused(wrong, caplog)
    assert "SaslAuthenticationFailed" in reason


def test_the_cli_says_a_wrong_password_in_one_line_naming_the_principal(
    secure_kafka: SecureKafka,
):
    password = unique("not-the-password")
    env = _environ(
        **{**secure_kafka.environment("orders"), "KAFKA_SASL_PASSWORD": password},
        TOPIC_PREFIX=unique("cli") + ".",
    )
    done = run_module("events.cli", "topics", "apply", env=env, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "User:orders" in lines[0]
    assert password not in done.stderr + done.stdout


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture, tmp_path: Path
):
    stranger = make_authority(tmp_path / "other-ca", name="some other CA")
    distrustful = dataclasses.replace(secure_kafka.connection("orders"), ca_file=stranger.cert)
    reason = await _refused(distrustful, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in reason


async def test_with_the_catalogues_acls_orders_may_not_write_payments_events(
    secure_kafka: SecureKafka,
):
    prefix = unique("acl") + "."
    env = _environ(**secure_kafka.environment("admin"), TOPIC_PREFIX=prefix)
    applied = run_module("events.cli", "topics", "apply", env=env, timeout=120)
    assert applied.returncode == 0, applied.stderr

    producer = AIOKafkaProducer(
        **secure_kafka.connection("orders").client_options(),
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        await producer.send_and_wait(f"{prefix}orders.events", b"allowed", key=b"o-1")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(f"{prefix}payments.events", b"forged", key=b"o-1")
    finally:
        await producer.stop()


async def test_a_principal_named_after_the_broker_started_is_added_by_up(
    secure_kafka: SecureKafka,
):
    name = unique("newservice")
    grown = dataclasses.replace(secure_kafka.spec, principals=(*secure_kafka.spec.principals, name))
    with pytest.raises(KafkaConnectionError):  # no SCRAM credential for it yet
        await _connect(grown.connection(name))
    up(grown)  # the broker runs already: up() only adds what is missing
    await _connect(grown.connection(name))
