"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from events.db import sqlite_url
from events.kafka import KafkaConnection
from events.supervisor import load_manifest
from infra.broker import ADMIN, BrokerSpec, down, free_port, private_spec, up
from infra.postgres import PgCluster, create_database, start_cluster, stop_cluster
from infra.registry import RegistrySpec
from tests.tokens import TEST_SECRET

# Every service a test builds or starts (in process or as a child process) verifies bearer
# tokens with the suite's secret, whatever the developer's environment says.
os.environ.update(AUTH_MODE="jwt", AUTH_JWT_SECRET=TEST_SECRET)
for _name in ("AUTH_JWT_SECRET_FILE", "AUTH_JWKS_FILE", "AUTH_JWKS_URL"):
    os.environ.pop(_name, None)


def _private_spec(home: Path) -> BrokerSpec:
    return private_spec(home)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a
    broker started from the Maven jars in a fresh home and stopped at the end of the session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    spec = _private_spec(tmp_path_factory.mktemp("kafka"))
    try:
        up(spec)
        yield spec.bootstrap
    finally:
        down(spec)


@dataclass(frozen=True)
class SecureKafka:
    """The session's secured broker (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer): one
    principal per service in services/manifest.yaml, plus admin (super user) and operator."""

    spec: BrokerSpec

    @property
    def bootstrap(self) -> str:
        return self.spec.bootstrap

    @property
    def ca_file(self) -> Path:
        return self.spec.ca_file

    def connection(self, principal: str = ADMIN) -> KafkaConnection:
        return self.spec.connection(principal)

    def environment(self, principal: str = ADMIN) -> dict[str, str]:
        """``KAFKA_*`` variables for a child process connecting as ``principal``."""
        return self.spec.environment(principal)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A secured broker of the session's own, started by the first test that asks for it
    and stopped at the end of the session."""
    names = [spec.name for spec in load_manifest()]
    spec = private_spec(tmp_path_factory.mktemp("kafka-secure"), secure=True, principals=names)
    try:
        up(spec)
        yield SecureKafka(spec)
    finally:
        down(spec)


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], BrokerSpec]]:
    """Starts private brokers (own home, free ports) for tests that stop and restart one;
    every broker it started is stopped at teardown."""
    started: list[BrokerSpec] = []

    def start() -> BrokerSpec:
        spec = _private_spec(tmp_path_factory.mktemp("broker"))
        started.append(spec)  # before up(): a broker that half-started is still stopped
        up(spec)
        return spec

    yield start
    for spec in started:
        down(spec)


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistrySpec]:
    """The session's schema registry (Apicurio, in-memory storage, a free port), started by
    the first test that asks and stopped at the end of the session. Its Confluent-compatible
    API is ``spec.ccompat_url``: give each test its own topics, so its own subjects."""
    from infra import registry

    spec = registry.private_spec(tmp_path_factory.mktemp("registry"))
    try:
        registry.up(spec)
        yield spec
    finally:
        registry.down(spec)


@pytest.fixture(scope="session")
def db_backend() -> str:
    """``CHOREO_TEST_DB=postgres`` runs the database-backed suites on PostgreSQL."""
    backend = os.environ.get("CHOREO_TEST_DB", "sqlite")
    if backend not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"CHOREO_TEST_DB must be sqlite or postgres, not {backend!r}")
    return backend


@pytest.fixture(scope="session")
def pg_cluster(db_backend: str) -> Iterator[PgCluster | None]:
    if db_backend != "postgres":
        yield None
        return
    # The postgres user must reach the cluster's directory: a world-traversable temp dir.
    home = Path(tempfile.mkdtemp(prefix="choreo-pg-"))
    home.chmod(0o755)
    cluster = start_cluster(home / "cluster", free_port())
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database_url(
    db_backend: str, pg_cluster: PgCluster | None, tmp_path: Path
) -> Callable[[str], str]:
    """Makes a fresh, empty database per call: a SQLite file or a PostgreSQL database."""

    def make(name: str) -> str:
        if pg_cluster is None:
            return sqlite_url(tmp_path / f"{name}-{uuid.uuid4().hex[:8]}.db")
        return create_database(pg_cluster, prefix=name.replace("-", "_")[:20])

    return make


# The third-party stand-ins of issue 19 as real processes (tests/external.py).
from tests.external import carrier, provider  # noqa: E402, F401
