"""End-to-end: all five services as separate processes against the session's broker, in an
isolated environment (topic prefix, fresh databases, free ports). ``secure_stack``: the same
on the session's secured broker, with the catalogue's ACLs and each service connecting as its
own principal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from events.acl_admin import apply_acls
from events.acls import desired_acls, parties, principal
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.supervisor import ProcessSpec, load_manifest, start, stop, wait_ready
from events.topics import apply_topics
from infra.broker import free_ports
from services.saga_check import Api
from tests.conftest import SecureKafka
from tests.support import unique
from tests.tokens import operator_headers

# faust is heavy to start: a test that wants analytics calls stack.start("analytics").
ON_DEMAND = {"analytics"}


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    var_dir: Path
    specs: list[ProcessSpec]
    codec: AvroCodec
    api: Api
    env: dict[str, str]
    # How the test itself reaches Kafka, and each service's own KAFKA_* settings (secured).
    kafka: KafkaConnection = field(default=KafkaConnection(""))
    service_env: Callable[[str], Mapping[str, str]] = field(default=lambda name: {})

    def spec(self, name: str) -> ProcessSpec:
        return next(s for s in self.specs if s.name == name)

    def start(self, *names: str) -> None:
        chosen = [s for s in self.specs if not names or s.name in names]
        for spec in chosen:
            env = {**self.env, **self.service_env(spec.name)}
            start([spec], var_dir=self.var_dir, bootstrap=self.bootstrap, env=env)
        wait_ready(chosen, var_dir=self.var_dir, deadline_s=90)

    def stop(self, *names: str, kill: bool = False) -> None:
        chosen = [s for s in self.specs if not names or s.name in names]
        stop(chosen, var_dir=self.var_dir, kill=kill)


@pytest.fixture
async def stack(
    kafka_bootstrap: str, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[Stack]:
    async for st in _stack(KafkaConnection(kafka_bootstrap), tmp_path, database_url):
        yield st


@pytest.fixture
async def secure_stack(
    secure_kafka: SecureKafka, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[Stack]:
    """The stack on the secured broker: topics and the catalogue's ACLs applied as admin;
    each service connects as its own principal, the test as the operator (who may write
    the ``*.requests`` topics, as ``choreo publish`` does)."""
    async for st in _stack(
        secure_kafka.connection("admin"),
        tmp_path,
        database_url,
        driver=secure_kafka.connection("operator"),
        service_env=secure_kafka.environment,
    ):
        yield st


async def _stack(
    admin: KafkaConnection,
    tmp_path: Path,
    database_url: Callable[[str], str],
    driver: KafkaConnection | None = None,
    service_env: Callable[[str], Mapping[str, str]] = lambda name: {},
) -> AsyncIterator[Stack]:
    prefix = unique("e2e") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    topics = list(catalogue.topics.values())
    await apply_topics(admin, topics)
    if admin.uses_sasl:
        names = {principal(name) for name in parties(topics)}
        wanted = desired_acls(topics, prefix)
        await asyncio.to_thread(apply_acls, admin, wanted, names, prefix=prefix)
    manifest = load_manifest()
    # Distinct ports: two services on one port would each answer the other's /ready.
    specs = [
        ProcessSpec(s.name, s.module, port)
        for s, port in zip(manifest, free_ports(len(manifest)), strict=True)
    ]
    env = {"TOPIC_PREFIX": prefix, "CONSUMER_BATCH": "200"}
    for s in specs:  # a database per service: SQLite files, or PostgreSQL databases
        env[f"{s.name.upper()}_DATABASE_URL"] = database_url(s.name)
    api = Api({s.name: s.port for s in specs}, operator_headers())
    st = Stack(
        admin.bootstrap,
        prefix,
        tmp_path / "var",
        specs,
        AvroCodec(catalogue),
        api,
        env,
        kafka=driver or admin,
        service_env=service_env,
    )
    st.start(*(s.name for s in specs if s.name not in ON_DEMAND))
    try:
        yield st
    finally:
        await api.close()
        st.stop()


# Issue 18's layout for the chaos test: a three-node cluster, two instances of each service
# behind the gateway, PostgreSQL in either pass (tests/e2e/cluster_stack.py).
from tests.e2e.cluster_stack import cluster_stack, postgres_always  # noqa: E402, F401
