"""The layout issue 18 promises to keep working, as processes: a private three-node Kafka
cluster (RF 3, min.insync.replicas=2 from the catalogue), two instances of every saga
service and of query (``supervisor.replicate``'s plan on free ports), PostgreSQL whatever
``CHOREO_TEST_DB`` says (a database per saga service shared by its instances, one per query
instance) and the nginx gateway in front of them all on a free port.

``ClusterStack`` also holds what the chaos test does to it: kill or restart a broker or an
instance, and roll a service's instances one by one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.kafka import admin_client
from events.supervisor import (
    EXIT_CODES,
    ProcessSpec,
    load_manifest,
    replicate,
    start,
    stop,
    upstreams,
    wait_ready,
)
from events.supervisor import status as supervisor_status
from events.topics import apply_topics
from infra.broker import free_port, free_ports
from infra.cluster import ClusterSpec, cluster_status, down_cluster, private_cluster, up_cluster
from infra.gateway import GatewaySpec, start_gateway, stop_gateway
from infra.postgres import PgCluster, create_database, start_cluster, stop_cluster
from tests.support import unique

REPLICAS = 2
READY_S = 120.0  # a Python service starting on 2 busy cores, a cluster behind it


@pytest.fixture
def postgres_always(pg_cluster: PgCluster | None) -> Iterator[PgCluster]:
    """The session's PostgreSQL in the PostgreSQL pass; a server of this test's own in the
    SQLite pass (instances of a service share its database, which SQLite cannot)."""
    if pg_cluster is not None:
        yield pg_cluster
        return
    home = Path(tempfile.mkdtemp(prefix="choreo-pg-chaos-"))
    home.chmod(0o755)  # the postgres user must reach it when the suite runs as root
    cluster = start_cluster(home / "cluster", free_port())
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class ClusterStack:
    kafka: ClusterSpec
    prefix: str
    var_dir: Path
    specs: list[ProcessSpec]
    env: dict[str, str]
    databases: dict[str, str]  # process or service name -> SQLAlchemy URL
    gateway: GatewaySpec
    codec: AvroCodec
    # Instances left out of the gateway while they are drained (see ``roll``).
    drained: set[str] = field(default_factory=set)

    def spec(self, name: str) -> ProcessSpec:
        return next(s for s in self.specs if s.name == name)

    def instances(self, service: str) -> list[ProcessSpec]:
        return [s for s in self.specs if s.service_name == service]

    def pid(self, name: str) -> int | None:
        (row,) = supervisor_status([self.spec(name)], var_dir=self.var_dir)
        return row.pid

    def start(self, *names: str) -> None:
        chosen = [self.spec(n) for n in names]
        start(chosen, var_dir=self.var_dir, bootstrap=self.kafka.bootstrap, env=self.env)
        wait_ready(chosen, var_dir=self.var_dir, deadline_s=READY_S)

    def kill(self, *names: str) -> None:
        stop([self.spec(n) for n in names], var_dir=self.var_dir, kill=True)

    def terminate(self, name: str) -> int | None:
        """SIGTERM and wait for the exit; the process's exit code."""
        pid = self.pid(name)
        stop([self.spec(name)], var_dir=self.var_dir, timeout_s=60)
        return None if pid is None else EXIT_CODES.get(pid)

    def route(self) -> None:
        """The gateway sends to every instance not drained (a reload that waits for the
        requests started under the old configuration)."""
        live = [s for s in self.specs if s.name not in self.drained]
        start_gateway(upstreams(live), self.gateway.port, home=self.gateway.home, timeout=30)

    def roll(self, name: str) -> int | None:
        """Restarts one instance as a rolling update does: out of the gateway (the reload
        waits for its requests in flight), SIGTERM, started again, ready, back in; the exit
        code of the SIGTERMed process."""
        self.drained.add(name)
        self.route()
        try:
            code = self.terminate(name)
            self.start(name)
        finally:
            self.drained.discard(name)
        self.route()
        return code

    async def leader_counts(self) -> dict[int, int]:
        """Partitions of this run's topics led by each broker id."""
        admin = admin_client(self.kafka.connection(), client_id=unique("leaders"))
        try:
            await admin.start()
            names = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            counts: dict[int, int] = {}
            for topic in await admin.describe_topics(names):
                for p in topic["partitions"]:
                    counts[p["leader"]] = counts.get(p["leader"], 0) + 1
            return counts
        finally:
            await admin.close()

    def kill_broker(self, node_id: int) -> None:
        pid = cluster_status(self.kafka).nodes[node_id - 1].pid
        assert pid is not None, f"broker {node_id} is not running"
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def cluster_stack(tmp_path: Path, postgres_always: PgCluster) -> AsyncIterator[ClusterStack]:
    kafka = private_cluster(tmp_path / "kafka", nodes=3)
    var_dir = tmp_path / "var"
    specs: list[ProcessSpec] = []
    gateway = GatewaySpec(home=tmp_path / "gateway", port=free_port())
    try:
        await asyncio.to_thread(up_cluster, kafka)
        prefix = unique("chaos") + "."
        catalogue = Catalogue.load().prefixed(prefix)
        await apply_topics(
            kafka.connection(),
            list(catalogue.topics.values()),
            replication=catalogue.replication,
        )
        # analytics (faust, one instance) is not part of the saga and costs a core to start.
        manifest = [s for s in load_manifest() if s.replicated]
        plan = replicate(manifest, REPLICAS)
        # The plan's names and sharing, on free ports (the manifest's may be taken).
        specs = [
            ProcessSpec(s.name, s.module, port, s.service, s.replicated, s.own_database)
            for s, port in zip(plan, free_ports(len(plan)), strict=True)
        ]
        databases: dict[str, str] = {}
        for s in specs:  # saga services: one per service; query: one per instance
            owner = s.name if s.own_database else s.service_name
            if owner not in databases:
                databases[owner] = create_database(
                    postgres_always, prefix=owner.replace("-", "_")[:20]
                )
        env = {"TOPIC_PREFIX": prefix, "CONSUMER_BATCH": "200"}
        for owner, url in databases.items():
            env[f"{owner.upper().replace('-', '_')}_DATABASE_URL"] = url
        stack = ClusterStack(
            kafka, prefix, var_dir, specs, env, databases, gateway, AvroCodec(catalogue)
        )
        # First instances, then the others (they would race creating the tables).
        stack.start(*(s.name for s in specs if not s.service))
        stack.start(*(s.name for s in specs if s.service))
        stack.route()
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stop_gateway(gateway)
        if specs:
            stop(specs, var_dir=var_dir, timeout_s=30)
        await asyncio.to_thread(down_cluster, kafka)
