"""Kafka's refusals a retry cannot fix: classified, worded in one line naming the principal,
the resource and the fix, and never retried by a service's start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    NodeNotReadyError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from pydantic import SecretStr

from events.cli.main import main
from events.components import Component, start_with_retry
from events.kafka import KafkaConnection
from events.kafka_auth import KafkaRefused, diagnose, refusal, refusals
from tests.unit.tls_support import untrusted_listener

ORDERS = KafkaConnection(
    "127.0.0.1:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    username="orders",
    password=SecretStr("not-this-one"),
)
DOWN = KafkaConnection("127.0.0.1:1", security_protocol="SSL")


def one_line(text: str | None) -> str:
    assert text is not None
    assert "\n" not in text
    return text


def test_a_wrong_password_names_the_principal_and_the_settings() -> None:
    exc = SaslAuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512"
    )
    line = one_line(refusal(ORDERS, exc))
    assert line.startswith("kafka: User:orders cannot log in to 127.0.0.1:9093 with SCRAM-SHA-512")
    assert "KAFKA_SASL_PASSWORD" in line
    assert "not-this-one" not in line


def test_a_missing_acl_names_principal_resource_and_fix() -> None:
    line = one_line(refusal(ORDERS, TopicAuthorizationFailedError("payments.events"), "write"))
    assert line == (
        "kafka: User:orders may not write topic payments.events "
        "(add the ACL: choreo topics apply, or ask the cluster's admin)"
    )
    several = refusal(ORDERS, TopicAuthorizationFailedError({"b.events", "a.events"}), "read")
    assert "may not read topic a.events, b.events" in one_line(several)
    group = one_line(refusal(ORDERS, GroupAuthorizationFailedError("orders")))
    assert "User:orders may not use consumer group orders" in group
    cluster = one_line(refusal(ORDERS, ClusterAuthorizationFailedError()))
    assert "User:orders may not make a cluster-level request" in cluster


def test_a_mechanism_the_broker_does_not_offer_says_which_setting() -> None:
    line = one_line(refusal(ORDERS, UnsupportedSaslMechanismError("enabled: ['PLAIN']")))
    assert "KAFKA_SASL_MECHANISM" in line


def test_what_a_retry_can_fix_is_not_a_refusal() -> None:
    assert refusal(ORDERS, KafkaConnectionError("Unable to bootstrap")) is None
    assert refusal(ORDERS, NodeNotReadyError()) is None
    assert refusal(ORDERS, OSError("Connect call failed")) is None


def test_a_refusal_found_through_the_cause_chain() -> None:
    try:
        try:
            raise TopicAuthorizationFailedError("payments.events")
        except TopicAuthorizationFailedError as inner:
            raise RuntimeError("publishing failed") from inner
    except RuntimeError as outer:
        assert "payments.events" in one_line(refusal(ORDERS, outer))


async def test_an_untrusted_broker_certificate_is_found_behind_the_bootstrap_failure(
    tmp_path: Path,
) -> None:
    # aiokafka says only "Unable to bootstrap": diagnose connects once itself to learn why.
    async with untrusted_listener(tmp_path) as port:
        kafka = KafkaConnection(f"127.0.0.1:{port}", security_protocol="SSL")
        line = one_line(await diagnose(kafka, KafkaConnectionError("Unable to bootstrap")))
    assert line.startswith(f"kafka: the broker at 127.0.0.1:{port} is not trusted")
    assert "KAFKA_SSL_CAFILE" in line


async def test_a_broker_that_is_down_stays_retryable_after_diagnosis() -> None:
    assert await diagnose(DOWN, KafkaConnectionError("Unable to bootstrap")) is None


async def test_start_up_stops_at_once_on_a_refusal_and_retries_anything_else() -> None:
    attempts: list[str] = []

    async def refused() -> None:
        attempts.append("refused")
        async with refusals(ORDERS, "read"):
            raise GroupAuthorizationFailedError("orders")

    stop = asyncio.Event()
    with pytest.raises(KafkaRefused, match="may not use consumer group orders"):
        await start_with_retry(Component("consumer", start=refused), stop)
    assert attempts == ["refused"] and not stop.is_set()

    async def flaky() -> None:
        attempts.append("flaky")
        if attempts.count("flaky") < 2:
            async with refusals(DOWN):  # no broker there yet: retried
                raise KafkaConnectionError("Unable to bootstrap")

    assert await start_with_retry(Component("relay", start=flaky), stop) is True
    assert attempts.count("flaky") == 2


async def test_the_cli_says_one_line_when_it_does_not_trust_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with untrusted_listener(tmp_path) as port:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
        monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
        status = await asyncio.to_thread(main, ["topics", "apply"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1
    assert f"the broker at 127.0.0.1:{port} is not trusted" in err[0]
