"""End-to-end: all five services as separate processes against the session's broker, in an
isolated environment (topic prefix, fresh databases, free ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.supervisor import ProcessSpec, load_manifest, start, stop, wait_ready
from events.topics import apply_topics
from infra.broker import free_ports
from services.saga_check import Api
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

    def spec(self, name: str) -> ProcessSpec:
        return next(s for s in self.specs if s.name == name)

    def start(self, *names: str) -> None:
        chosen = [s for s in self.specs if not names or s.name in names]
        start(chosen, var_dir=self.var_dir, bootstrap=self.bootstrap, env=self.env)
        wait_ready(chosen, var_dir=self.var_dir, deadline_s=90)

    def stop(self, *names: str, kill: bool = False) -> None:
        chosen = [s for s in self.specs if not names or s.name in names]
        stop(chosen, var_dir=self.var_dir, kill=kill)


@pytest.fixture
async def stack(
    kafka_bootstrap: str, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[Stack]:
    prefix = unique("e2e") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
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
    st = Stack(kafka_bootstrap, prefix, tmp_path / "var", specs, AvroCodec(catalogue), api, env)
    st.start(*(s.name for s in specs if s.name not in ON_DEMAND))
    try:
        yield st
    finally:
        await api.close()
        st.stop()
