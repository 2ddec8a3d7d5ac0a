"""Kafka client construction in one place: where the brokers are and how to reach them
(:class:`KafkaConnection`: TLS, SASL), and the guarantees every producer and consumer keeps."""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and who connects: built once from the settings at an entrypoint
    and passed to every client (producer, consumer, admin, replay reader, faust app).

    The password is a ``SecretStr``, so ``repr``, logs and error messages never show it."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __str__(self) -> str:
        """Where and as whom, for messages: never the password."""
        if self.security_protocol == "PLAINTEXT":
            return self.bootstrap
        return f"{self.bootstrap} ({self.security_protocol} as {self.principal})"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def principal(self) -> str:
        """Kafka's name for whoever connects, as ACLs and error messages spell it."""
        if self.uses_sasl and self.username:
            return f"User:{self.username}"
        return "User:ANONYMOUS"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying context (the CA file, else the system's CAs); with a client
        certificate and key for mutual TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None:
            keyfile = str(self.key_file) if self.key_file is not None else None
            context.load_cert_chain(str(self.cert_file), keyfile)
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for a producer, consumer or admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = (
                self.password.get_secret_value() if self.password is not None else None
            )
        return options

    def librdkafka_config(self) -> dict[str, str]:
        """The same connection for confluent-kafka (librdkafka's property names)."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.uses_tls:
            if self.ca_file is not None:
                config["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file is not None:
                config["ssl.certificate.location"] = str(self.cert_file)
            if self.key_file is not None:
                config["ssl.key.location"] = str(self.key_file)
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = (
                self.password.get_secret_value() if self.password is not None else ""
            )
        return config


def reliable_producer(
    kafka: KafkaConnection, *, client_id: str, request_timeout_ms: int = 15000, **extra: Any
) -> AIOKafkaProducer:
    """Idempotent, acks=all: a retry never duplicates or reorders within a partition."""
    options: dict[str, Any] = {
        **kafka.client_options(),
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": request_timeout_ms,
    }
    options.update(extra)
    return AIOKafkaProducer(**options)


def manual_consumer(kafka: KafkaConnection, *, group_id: str, **extra: Any) -> AIOKafkaConsumer:
    """Offsets are committed by the caller, after its database commit."""
    options: dict[str, Any] = {
        **kafka.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
    }
    options.update(extra)
    return AIOKafkaConsumer(**options)


def plain_consumer(kafka: KafkaConnection, **options: Any) -> AIOKafkaConsumer:
    """A consumer with the caller's options on this connection (readers, tails, tools)."""
    return AIOKafkaConsumer(**{**kafka.client_options(), **options})


def plain_producer(kafka: KafkaConnection, **options: Any) -> AIOKafkaProducer:
    """A producer with the caller's options on this connection (tools and benchmarks)."""
    return AIOKafkaProducer(**{**kafka.client_options(), **options})


def admin_client(kafka: KafkaConnection, *, client_id: str, **extra: Any) -> AIOKafkaAdminClient:
    """An admin client (topics, metadata) on this connection."""
    return AIOKafkaAdminClient(**{**kafka.client_options(), "client_id": client_id, **extra})


async def stop_quietly(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stops clients on the way out: a broker that is gone must not fail a close."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(KafkaError, OSError):
                await client.stop()
