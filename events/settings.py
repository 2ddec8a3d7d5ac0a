"""Settings shared by every choreo process, read once at the entrypoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class PlatformSettings(BaseSettings):
    """From environment variables (and an optional ``.env``); services extend this."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
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
