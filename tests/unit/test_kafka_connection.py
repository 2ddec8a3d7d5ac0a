"""KafkaConnection: the client options every Kafka client is built from, and the secret
that never shows in what the platform renders."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from events.kafka import (
    KafkaConnection,
    admin_client,
    manual_consumer,
    plain_consumer,
    reliable_producer,
)
from events.kafka_auth import refusal
from events.settings import PlatformSettings, settings_error
from events.unreachable import broker_unreachable
from services.analytics.pipeline import faust_credentials
from tests.unit.tls_support import self_signed

PASSWORD = "pw-0f9c2e71-never-shown"


def scram(tmp_path: Path | None = None) -> KafkaConnection:
    ca = self_signed(tmp_path)[0] if tmp_path is not None else None
    return KafkaConnection(
        bootstrap="broker1:9093,broker2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="orders",
        password=SecretStr(PASSWORD),
        ca_file=ca,
    )


def test_plaintext_options_name_only_the_brokers() -> None:
    kafka = KafkaConnection("127.0.0.1:9092")
    assert kafka.client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.principal == "User:ANONYMOUS"
    assert str(kafka) == "127.0.0.1:9092"
    assert kafka.librdkafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
    }


def test_sasl_ssl_options_carry_the_mechanism_user_and_a_verifying_context(
    tmp_path: Path,
) -> None:
    kafka = scram(tmp_path)
    options = kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "orders"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kafka.principal == "User:orders"
    assert str(kafka) == "broker1:9093,broker2:9093 (SASL_SSL as User:orders)"
    config = kafka.librdkafka_config()
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == str(kafka.ca_file)


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    kafka = KafkaConnection(
        "b:9093", security_protocol="SSL", ca_file=cert, cert_file=cert, key_file=key
    )
    assert kafka.uses_tls and not kafka.uses_sasl
    assert "sasl_mechanism" not in kafka.client_options()
    config = kafka.librdkafka_config()
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)


async def test_every_client_factory_takes_the_secured_connection(tmp_path: Path) -> None:
    # aiokafka refuses SASL_SSL without an ssl_context, or a SCRAM mechanism without a user:
    # building each client checks that the options reach it whole.
    kafka = scram(tmp_path)
    clients = [
        reliable_producer(kafka, client_id="p"),
        manual_consumer(kafka, group_id="g"),
        plain_consumer(kafka, group_id=None),
        admin_client(kafka, client_id="a"),
    ]
    assert len(clients) == 4
    with pytest.raises(ValueError):
        plain_consumer(KafkaConnection("b:9093", security_protocol="SSL"), ssl_context=None)


def test_faust_gets_the_same_connection_scram_sha_512_included(tmp_path: Path) -> None:
    creds = faust_credentials(scram(tmp_path))
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "orders"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert PASSWORD not in repr(creds)

    tls = faust_credentials(KafkaConnection("b:9093", security_protocol="SSL"))
    assert credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"
    assert faust_credentials(KafkaConnection("b:9092")) is None


def test_no_rendering_of_settings_connection_or_errors_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "orders")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    settings = PlatformSettings(_env_file=None)  # type: ignore[call-arg]
    kafka = settings.kafka_connection()
    assert kafka.password is not None and kafka.password.get_secret_value() == PASSWORD
    failure = SaslAuthenticationFailed("Authentication failed: invalid credentials")
    rendered = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(kafka),
        str(kafka),
        repr(faust_credentials(kafka)),
        broker_unreachable(kafka, KafkaConnectionError("Unable to bootstrap")),
        broker_unreachable(kafka, failure),
        str(refusal(kafka, failure)),
    ]
    assert "User:orders cannot log in" in rendered[-1]
    for text in rendered:
        assert PASSWORD not in text


def test_a_bad_security_setting_is_named_without_echoing_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(Exception) as raised:
        PlatformSettings(_env_file=None)  # type: ignore[call-arg]
    line = settings_error(raised.value)
    assert "KAFKA_SECURITY_PROTOCOL" in line
    assert PASSWORD not in line and PASSWORD not in str(raised.value)
