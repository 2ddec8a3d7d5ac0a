"""Settings shared by every choreo process, read once at the entrypoint."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.kafka import KafkaConnection, SaslMechanism, SecurityProtocol

REPO_ROOT = Path(__file__).resolve().parent.parent

SchemaFormat = Literal["single-object", "registry"]
# The local registry's Confluent-compatible API (`choreo registry up`).
DEFAULT_REGISTRY_URL = "http://127.0.0.1:8081/apis/ccompat/v7"


@dataclass(frozen=True, slots=True)
class SchemaEncoding:
    """How a process frames the Avro it writes; it reads both framings whatever this says.

    ``single-object``: ``C3 01`` + the schema's fingerprint (choreo's default, no registry).
    ``registry``: the schema registry wire format (``00`` + a 4-byte schema id), ids from
    the registry at ``registry_url`` (its Confluent-compatible API).
    """

    format: SchemaFormat = "single-object"
    registry_url: str = DEFAULT_REGISTRY_URL


class PlatformSettings(BaseSettings):
    """From environment variables (and an optional ``.env``); services extend this."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="How clients reach Kafka: PLAINTEXT, SSL, SASL_SSL, ..."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CAs that sign the brokers' certificates"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS)"
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM client key (mutual TLS)")
    schemas_dir: Path = Field(
        default=REPO_ROOT / "schemas", description="Root of the Avro contract catalogue"
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix for every topic and consumer group (isolated environments)",
    )
    var_dir: Path = Field(
        default=REPO_ROOT / "var", description="Where local databases, logs and pids live"
    )
    max_event_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        description="Largest event (payload + key + headers) a unit of work accepts; keep "
        "it under the topics' max.message.bytes (Kafka's default: 1048588)",
    )

    schema_format: SchemaFormat = Field(
        default="single-object",
        description="How events written are framed: single-object (C3 01 + fingerprint) or "
        "registry (the schema registry wire format: 00 + schema id); both are always read",
    )
    schema_registry_url: str = Field(
        default=DEFAULT_REGISTRY_URL,
        description="The schema registry's Confluent-compatible API (ids of registry-framed "
        "events are looked up there)",
    )

    def schema_encoding(self) -> SchemaEncoding:
        return SchemaEncoding(self.schema_format, self.schema_registry_url)

    def kafka_connection(self) -> KafkaConnection:
        """The one description of how this process reaches Kafka."""
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            ca_file=self.kafka_ssl_cafile,
            cert_file=self.kafka_ssl_certfile,
            key_file=self.kafka_ssl_keyfile,
        )


def settings_error(exc: Exception) -> str:
    """One line naming the environment variable and what is wrong with it."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return " ".join(str(exc).split())
    parts = []
    for err in errors():
        name = ".".join(str(p) for p in err.get("loc", ())).upper() or "?"
        value = err.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"{name}{shown}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(name: str, settings_cls: type[SettingsT]) -> SettingsT:
    """A process's settings from its environment, read once at its entrypoint; a bad value
    exits with status 2 and one line naming it."""
    try:
        return settings_cls()
    except Exception as exc:
        print(f"{name}: bad setting {settings_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
