"""The local Apache Kafka cluster: three combined-mode KRaft nodes started from the same jars.

``choreo broker up --nodes 3`` shows what replication does (replication factor 3,
``min.insync.replicas=2``, a broker lost and back) on one machine. Each node is a
:class:`infra.broker.BrokerSpec` with a home of its own under the cluster's home
(``node-1`` ... ``node-N``: config, data, logs, pid file), its own client and controller ports,
and ``node_id``/``voters`` that make the nodes one controller quorum. The nodes share one
cluster id; on first start every node's storage is formatted with ``--initial-controllers``
naming all voters (``id@host:port:directory-id``), as Kafka 4.1's KRaft docs prescribe for
bootstrapping a dynamic quorum with several controllers. The ids are kept in
``cluster.json`` so a node formatted later (its data dir was removed) joins the same cluster.

    spec = default_cluster()   # <repo>/var/kafka-cluster, clients on 9192/9194/9196
    up_cluster(spec)           # starts the nodes not running; waits until metadata lists all
    cluster_status(spec)       # per node up/down, the active controller, under-replicated
    down_cluster(spec)

Plaintext only: the secured broker (``--secure``) stays a single node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from events.kafka import KafkaConnection, admin_client
from infra.broker import (
    BrokerError,
    BrokerSpec,
    NodeStart,
    broker_pid,
    ensure_jars,
    start_node,
)
from infra.locks import exclusive
from infra.processes import (
    alive,
    free_ports,
    port_open,
    repo_root,
    run_async,
    wait_for_exit,
    which,
)

__all__ = [
    "ClusterSpec",
    "ClusterStatus",
    "NodeStatus",
    "cluster_status",
    "default_cluster",
    "down_cluster",
    "private_cluster",
    "up_cluster",
]

_HOST = "127.0.0.1"
_BASE_PORT = 9192
_HEAP_MB = 384  # three JVMs on a 2-core, 24 GiB machine
_POLL_S = 0.2


@dataclass(frozen=True)
class ClusterSpec:
    """Where the cluster lives and its nodes (node ids 1..N, in order)."""

    home: Path
    nodes: tuple[BrokerSpec, ...]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def connection(self) -> KafkaConnection:
        return KafkaConnection(bootstrap=self.bootstrap)

    @property
    def identity_file(self) -> Path:
        return self.home / "cluster.json"


@dataclass
class NodeStatus:
    node_id: int
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path


@dataclass
class ClusterStatus:
    nodes: list[NodeStatus]
    brokers: list[int] = field(default_factory=list)  # ids the metadata lists as alive
    controller: int | None = None  # the quorum's leader, the active controller
    under_replicated: list[str] = field(default_factory=list)  # "topic-partition"

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)


def _spec(home: Path, ports: list[int], heap_mb: int) -> ClusterSpec:
    """Node ``i`` (1-based) listens on ``ports[2i-2]`` for clients, ``ports[2i-1]`` for
    controllers."""
    count = len(ports) // 2
    voters = tuple(ports[2 * i + 1] for i in range(count))
    nodes = tuple(
        BrokerSpec(
            home=home / f"node-{i + 1}",
            port=ports[2 * i],
            controller_port=ports[2 * i + 1],
            heap_mb=heap_mb,
            node_id=i + 1,
            voters=voters,
        )
        for i in range(count)
    )
    return ClusterSpec(home=Path(home).absolute(), nodes=nodes)


def default_cluster(nodes: int = 3) -> ClusterSpec:
    """``<repo>/var/kafka-cluster``; node N's client port is 9192 + 2(N-1) and its controller
    port the next one, unless ``CHOREO_KAFKA_CLUSTER_HOME``/``_PORT`` say."""
    if nodes < 3:
        raise BrokerError(f"a cluster needs 3+ nodes (a quorum that survives a loss), not {nodes}")
    home = Path(
        os.environ.get("CHOREO_KAFKA_CLUSTER_HOME") or repo_root() / "var" / "kafka-cluster"
    )
    text = os.environ.get("CHOREO_KAFKA_CLUSTER_PORT")
    try:
        base = int(text) if text else _BASE_PORT
    except ValueError:
        message = f"CHOREO_KAFKA_CLUSTER_PORT must be a port number, got {text!r}"
        raise BrokerError(message) from None
    return _spec(home.resolve(), list(range(base, base + 2 * nodes)), _HEAP_MB)


def private_cluster(home: Path, nodes: int = 3, heap_mb: int = _HEAP_MB) -> ClusterSpec:
    """A cluster of its own (tests, benchmarks): a fresh home and free ports."""
    return _spec(home, free_ports(2 * nodes), heap_mb)


def up_cluster(spec: ClusterSpec, timeout: float = 180.0) -> ClusterStatus:
    """Start every node that is not running (all at once: a node cannot finish starting
    without a quorum), then wait until each answers and the metadata lists every node."""
    deadline = time.monotonic() + timeout
    java = which("java", BrokerError)
    spec.home.mkdir(parents=True, exist_ok=True)
    with exclusive(spec.home / ".lock"):
        libs = ensure_jars()
        cluster_id, directory_ids = _identity(spec)
        initial = ",".join(
            f"{node.node_id}@{_HOST}:{node.controller_port}:{directory_ids[str(node.node_id)]}"
            for node in spec.nodes
        )
        started: list[NodeStart] = []
        for node in spec.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            pid = broker_pid(node)
            if pid is not None:
                started.append(NodeStart(node, pid))
                continue
            if port_open(node.port) or port_open(node.controller_port):
                raise BrokerError(
                    f"port {node.port} or {node.controller_port} on {_HOST} is already in use "
                    f"by another process: stop it or choose other ports "
                    f"(CHOREO_KAFKA_CLUSTER_PORT)"
                )
            quorum = ("--initial-controllers", initial)
            started.append(start_node(node, java, libs, cluster_id, quorum))
        for node_start in started:
            node_start.wait_until_ready(deadline)
        while True:
            current = cluster_status(spec)
            if len(current.brokers) == len(spec.nodes):
                return current
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the cluster's metadata lists brokers {current.brokers}, not all "
                    f"{len(spec.nodes)}; see the nodes' logs under {spec.home}"
                )
            time.sleep(_POLL_S)


def down_cluster(spec: ClusterSpec, timeout: float = 60.0) -> int:
    """SIGTERM every node at once (one by one, the last would wait for a quorum that is
    gone), SIGKILL what is left after ``timeout``; returns how many were running."""
    pids = {node: broker_pid(node) for node in spec.nodes}
    running = {node: pid for node, pid in pids.items() if pid is not None}
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node, pid in running.items():
        if not wait_for_exit(pid, deadline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not wait_for_exit(pid, time.monotonic() + 10.0):
                raise BrokerError(f"node {node.node_id} pid {pid} survived SIGKILL")
    for node in spec.nodes:
        node.pid_file.unlink(missing_ok=True)
    return len(running)


def cluster_status(spec: ClusterSpec) -> ClusterStatus:
    """Per node: a live process of that home and an open port. When any node runs: the
    brokers the metadata lists, the active controller and the under-replicated partitions."""
    nodes = []
    for node in spec.nodes:
        pid = broker_pid(node)
        nodes.append(
            NodeStatus(
                node_id=node.node_id,
                running=pid is not None and alive(pid) and port_open(node.port),
                pid=pid,
                bootstrap=node.bootstrap,
                log_file=node.log_file,
            )
        )
    current = ClusterStatus(nodes=nodes)
    live = [n for n, s in zip(spec.nodes, nodes, strict=True) if s.running]
    if live:
        bootstrap = ",".join(n.bootstrap for n in live)
        current.brokers, current.under_replicated = run_async(_metadata(bootstrap))
        current.controller = _active_controller(live)
    return current


async def _metadata(bootstrap: str, budget_s: float = 5.0) -> tuple[list[int], list[str]]:
    """The brokers the metadata lists, and every partition whose ISR is short of its
    replicas; nothing when no node answers in time."""
    admin = admin_client(KafkaConnection(bootstrap=bootstrap), client_id="choreo-cluster")
    try:
        async with asyncio.timeout(budget_s):
            await admin.start()
            cluster = await admin.describe_cluster()
            topics = await admin.describe_topics(await admin.list_topics())
    except Exception:  # starting, or the nodes asked went away: a status, not an error
        return [], []
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = sorted(int(b["node_id"]) for b in cluster.get("brokers", []))
    under = [
        f"{t['topic']}-{p['partition']}"
        for t in topics
        for p in t.get("partitions", [])
        if len(p.get("isr", [])) < len(p.get("replicas", []))
    ]
    return brokers, sorted(under)


def _active_controller(live: list[BrokerSpec]) -> int | None:
    """The quorum's leader as the running nodes last recorded it (the newest epoch wins).

    Why a file: the metadata answer's controller id is a random broker under KRaft, and the
    quorum is described only by Kafka's DescribeQuorum API, which neither aiokafka nor
    confluent-kafka offer (the Java tool, kafka-metadata-quorum, is in a jar the broker does
    not need). Each node keeps its view of the election in ``quorum-state`` (JSON)."""
    best: tuple[int, int] | None = None
    for node in live:
        path = node.data_dir / "__cluster_metadata-0" / "quorum-state"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads(path.read_text())
            epoch, leader = int(state["leaderEpoch"]), int(state["leaderId"])
            if leader >= 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
    return best[1] if best is not None else None


def _identity(spec: ClusterSpec) -> tuple[str, dict[str, str]]:
    """The cluster id and each node's metadata directory id, made once and kept."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        doc = json.loads(spec.identity_file.read_text())
        ids = {str(k): str(v) for k, v in doc["directory_ids"].items()}
        if all(str(node.node_id) in ids for node in spec.nodes):
            return str(doc["cluster_id"]), ids
    cluster_id = _kafka_uuid()
    ids = {str(node.node_id): _kafka_uuid() for node in spec.nodes}
    doc = {"cluster_id": cluster_id, "directory_ids": ids}
    spec.identity_file.write_text(json.dumps(doc, indent=2) + "\n")
    return cluster_id, ids


def _kafka_uuid() -> str:
    """A random id as ``kafka-storage random-uuid`` prints it (16 random bytes, URL-safe
    base64 without padding, never starting with '-'); made here, it saves a JVM start per
    id."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text
