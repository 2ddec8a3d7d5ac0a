"""The compose stack knows every service in the code, with the settings each one needs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices

from events.supervisor import load_manifest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/app.py"))


def has_database(name: str) -> bool:
    """Analytics keeps its state in Kafka (faust's changelog topics): no DATABASE_URL."""
    settings_cls = importlib.import_module(f"services.{name}.app").Settings
    return "database_url" in settings_cls.model_fields


def test_every_service_package_is_in_the_stack_and_the_manifest():
    assert set(SERVICES) <= set(COMPOSE["services"])
    manifest = {s.name for s in load_manifest()}
    assert set(SERVICES) - {"query"} <= manifest


def env_names(settings_cls) -> set[str]:
    """The variables the settings read: each field's name, or its aliases when it has them
    (OTEL_TRACES_EXPORTER for trace_exporter)."""
    names = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(name.upper())
    return names


@pytest.mark.parametrize("name", SERVICES)
def test_service_entry_has_what_the_service_needs(name):
    entry = COMPOSE["services"][name]
    assert entry["command"] == ["python", "-m", f"services.{name}"]
    env = entry["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert env["HTTP_HOST"] == "0.0.0.0"
    settings_cls = importlib.import_module(f"services.{name}.app").Settings
    unknown = set(env) - env_names(settings_cls)
    assert not unknown, f"{name}: compose sets {unknown}, which its settings do not read"
    port = int(env["HTTP_PORT"])
    assert entry["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert str(port) in " ".join(entry["healthcheck"]["test"])
    deps = entry["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    if has_database(name):
        assert env["DATABASE_URL"].endswith(f"@postgres:5432/{name}")
        assert deps["postgres"]["condition"] == "service_healthy"
    else:
        assert "DATABASE_URL" not in env and "postgres" not in deps
    assert deps["topics"]["condition"] == "service_completed_successfully"


def test_each_service_database_is_created():
    sql = (ROOT / "infra" / "postgres" / "init-databases.sql").read_text()
    for name in filter(has_database, SERVICES):
        assert f"CREATE DATABASE {name};" in sql


def test_env_example_documents_every_setting():
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line
    }
    for name in SERVICES:
        settings_cls = importlib.import_module(f"services.{name}.app").Settings
        missing = {f.upper() for f in settings_cls.model_fields} - documented
        assert not missing, f"{name}: .env.example lacks {sorted(missing)}"
