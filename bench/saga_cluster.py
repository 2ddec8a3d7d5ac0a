"""``python -m bench.saga --layout cluster``: the single node and the scaled-out layout of issue
18 measured one after the other in one run, at the same steady rate (default 100 orders/s),
both on PostgreSQL with its durable defaults (``bench.saga_env``), tracing as shipped.

- **single**: one private broker, one instance of every service of ``choreo up``'s manifest,
  orders POSTed straight to the orders instance.
- **cluster**: a private three-node KRaft cluster (``infra.cluster.private_cluster``, its
  default heaps), the catalogue's topics replicated as ``choreo topics apply`` does there
  (replication factor 3, ``min.insync.replicas=2``), two instances of each saga service and of
  query as ``choreo up --replicas 2`` runs them (analytics stays one; the second query keeps a
  read model of its own, in its own database), and orders POSTed through the nginx gateway
  (``infra.gateway``) in front of every instance.

Per layout: the saga warmed up (``--warmup`` orders published at once, then a few seconds of
POSTs), the idle stack's CPU, then each rate of ``--rates`` (default 100) for
``--step-seconds`` over HTTP (``bench.saga_http``): completions per second, p50/p99 from an
order's scheduled time to its ``OrderCompleted`` on Kafka, and CPU per process from ``/proc``
summed by group (brokers, services, gateway, PostgreSQL). After the stack has stopped, the
raw 6-hop aiokafka pipe (``bench.raw_hop``: idempotent acks=all producers, a commit per batch)
runs at 100 messages/s on the same brokers; on the cluster its topics are replicated the same
way, so both sides pay for the same acks.

Nothing else may run: on 2 cores the cluster's three JVMs and thirteen service processes share
what one broker and seven processes had, and the run says where that CPU goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

from bench.common import wait_for_group_coordinator
from bench.cpu import CpuProbe
from bench.entry import progress_for
from bench.saga import run_raw, service_names
from bench.saga_cluster_report import render
from bench.saga_env import databases, trace_sink, tracing_env
from bench.saga_http import IN_FLIGHT, HttpOrders, http_rate
from bench.saga_load import BROKER, DB_SERVER, Progress, idle, warm_up
from bench.saga_options import Options
from bench.saga_stack import completed_count, saga_target, start_stack, stop_stack
from bench.saga_watch import SagaBenchError
from events.kafka import KafkaConnection, admin_client
from events.supervisor import MANIFEST, load_manifest, upstreams
from infra.broker import down, free_port, private_spec, up
from infra.cluster import cluster_status, down_cluster, private_cluster, up_cluster
from infra.gateway import gateway_pid, start_gateway, stop_gateway

LAYOUTS = ("single", "cluster")
REPLICAS = {"single": 1, "cluster": 2}
GATEWAY = "gateway (nginx master + worker)"
LOAD = "bench (this process)"
SINK = "otlp sink (Jaeger's stand-in)"
HTTP_TIMEOUT_S = 30.0  # a POST's answer on a saturated machine (the gateway waits as long)
HTTP_WARMUP_S = 5.0  # POSTs before the idle step: uvicorn, nginx and httpx paths warm

progress = progress_for("bench.saga --layout cluster")


@dataclass(frozen=True)
class Brokers:
    kafka: KafkaConnection
    jvm: dict[str, int]  # process name -> pid


@contextlib.contextmanager
def brokers(layout: str, root: Path, say: Progress) -> Iterator[Brokers]:
    """A private single broker or three-node cluster under ``root``, stopped on exit."""
    if layout == "single":
        spec = private_spec(root / "kafka")
        say(f"single: starting a private broker on {spec.bootstrap}")
        try:
            status = up(spec)
            yield Brokers(spec.connection(), {BROKER: status.pid} if status.pid else {})
        finally:
            down(spec)
        return
    cluster = private_cluster(root / "kafka-cluster")
    say(f"cluster: starting a private three-node cluster on {cluster.bootstrap}")
    try:
        up_cluster(cluster)
        nodes = cluster_status(cluster).nodes
        yield Brokers(
            cluster.connection(),
            {f"broker {n.node_id} (JVM)": n.pid for n in nodes if n.pid is not None},
        )
    finally:
        down_cluster(cluster)


def stand_ins(path: Path = MANIFEST) -> set[str]:
    """The manifest's stand-ins for third parties (``stand_in: true``), counted apart from
    the services: they are not the platform (and idle while payments and shipping are given
    no URL for them)."""
    doc = yaml.safe_load(path.read_text()) or {}
    return {name for name, body in (doc.get("services") or {}).items() if body.get("stand_in")}


def database_names(replicas: int) -> list[str]:
    """A database per service, and one per further instance of a service that keeps its own
    (query-2's read model)."""
    own = [
        f"{s.name}-{k}" for s in load_manifest() if s.own_database for k in range(2, replicas + 1)
    ]
    return service_names() + own


async def replication_factor(kafka: KafkaConnection, topic: str) -> int:
    """How many replicas the topic's first partition has (what the layout really got)."""
    admin = admin_client(kafka, client_id="bench-saga-layout")
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"][0]["replicas"])
    finally:
        await admin.close()


def cpu_groups(cpu: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """CPU ms per saga and cores of each group of processes (names as ``CpuProbe`` has them)."""
    rows = {r["process"]: r for r in cpu["processes"]}
    wall = float(cpu["wall_s"]) or 1.0
    out: dict[str, dict[str, float]] = {}
    for group, names in groups.items():
        seconds = sum(float(rows[n]["cpu_s"]) for n in names if n in rows)
        out[group] = {
            "ms_per_saga": round(seconds * 1000 / cpu["units"], 2),
            "cores": round(seconds / wall, 3),
        }
    out["others (not ours)"] = {"ms_per_saga": 0.0, "cores": float(cpu["others_cores"])}
    return out


async def run_layout(
    layout: str, brokers: Brokers, root: Path, opts: Options, say: Progress
) -> dict[str, Any]:
    """One layout's stack: warm-up, idle, each rate over HTTP; then the raw pipe."""
    kafka = brokers.kafka
    await wait_for_group_coordinator(kafka)
    replicas = REPLICAS[layout]
    async with contextlib.AsyncExitStack() as scope:
        sink = await scope.enter_async_context(trace_sink()) if opts.tracing else None
        urls, server_pid = scope.enter_context(databases("postgres", database_names(replicas)))
        say(f"{layout}: starting the services, {replicas} instance(s) of each replicated one")
        stack = await start_stack(
            kafka, root, opts.consumer_batch, {**urls, **tracing_env(sink)}, replicas=replicas
        )
        scope.push_async_callback(stop_stack, stack)
        trees = {DB_SERVER: server_pid} if server_pid is not None else {}
        if layout == "cluster":
            gateway = await asyncio.to_thread(
                start_gateway, upstreams(stack.specs), free_port(), root / "gateway"
            )
            scope.callback(stop_gateway, gateway)  # before the instances stop, as choreo down
            master = gateway_pid(gateway)
            if master is None:
                raise SagaBenchError(f"the gateway has no master process: see {gateway.error_log}")
            trees[GATEWAY] = master
            url = f"{gateway.url}/api/v1/orders"
        else:
            url = stack.api.url("orders", "/orders")
        target = await saga_target(stack, layout)
        scope.push_async_callback(target.watch.close)
        target.also_stack = frozenset(brokers.jvm) | {GATEWAY}
        extra = {SINK: sink.pid} if sink is not None else {}
        probe = CpuProbe({**target.pids, **extra}, brokers.jvm, trees)
        idle_parties = stand_ins()
        groups = {
            "brokers": sorted(brokers.jvm),
            "services": sorted(set(target.pids) - idle_parties),
            "stand-ins": sorted(set(target.pids) & idle_parties),
            "gateway": [GATEWAY] if GATEWAY in trees else [],
            "postgres": [DB_SERVER],
        }
        say(f"{layout}: warm-up, {opts.warmup} orders published at once")
        sizes = await warm_up(kafka, target, opts.warmup)
        client = httpx.AsyncClient(
            headers=stack.api.http.headers,
            timeout=HTTP_TIMEOUT_S,
            limits=httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT),
        )
        scope.push_async_callback(client.aclose)
        orders = HttpOrders(target, client, url)
        warm = await http_rate(
            kafka, orders, opts.ladder[0], HTTP_WARMUP_S, probe, say, label=f"{layout} warm-up"
        )
        idle_cpu = await idle(target, opts.idle_s, probe, say)
        steps = []
        for rate in opts.ladder:
            step = await http_rate(
                kafka, orders, rate, opts.step_s, probe, say, label=f"{layout} at {rate:g}/s"
            )
            step["groups"] = cpu_groups(step["cpu"], groups)
            say(
                f"{layout}: {rate:g}/s -> {step['completion_rate']:g}/s done, p99 "
                f"{step['latency_ms'].get('p99', 0):.0f} ms, stack "
                f"{step['cpu']['stack_cores']:.2f} cores ({step['why']})"
            )
            steps.append(step)
        expected = opts.warmup + warm["n"] + sum(st["n"] for st in steps)
        completed = await completed_count(stack)
        if completed != expected:
            raise SagaBenchError(f"{layout}: {completed} orders COMPLETED, expected {expected}")
        factor = await replication_factor(kafka, stack.prefix + "orders.events")
        instances = {s.name: s.port for s in stack.specs}
        say(f"{layout}: stopping the stack")
    raw = await run_raw(kafka, sizes, replace(opts, burst=0), brokers.jvm, say)
    steady = raw["steady"]
    steady["groups"] = cpu_groups(
        steady["cpu"], {"brokers": sorted(brokers.jvm), "raw hops": raw_hops(raw)}
    )
    # The pipe's stack as this layout has it: its hops and every broker (run_raw's probe
    # knows the single node's broker only by the name BROKER).
    steady["layout_ms_per_chain"] = round(
        sum(steady["groups"][g]["ms_per_saga"] for g in ("brokers", "raw hops")), 2
    )
    steady["layout_cores"] = round(
        sum(steady["groups"][g]["cores"] for g in ("brokers", "raw hops")), 3
    )
    return {
        "layout": layout,
        "brokers": sorted(brokers.jvm),
        "replication_factor": factor,
        "instances": instances,
        "entry": "gateway" if layout == "cluster" else "orders",
        "value_sizes": sizes,
        "idle": idle_cpu,
        "steps": steps,
        "checked_completed": completed,
        "raw": raw,
    }


def raw_hops(raw: dict[str, Any]) -> list[str]:
    return [r["process"] for r in raw["steady"]["cpu"]["processes"] if "raw hop" in r["process"]]


def run(root: Path, opts: Options, say: Progress = progress) -> dict[str, Any]:
    """Both layouts, one after the other, each on brokers of its own."""
    started = time.perf_counter()
    result: dict[str, Any] = {"options": asdict(opts), "layouts": {}}
    for layout in LAYOUTS:
        home = root / layout
        with brokers(layout, home, say) as running:
            result["layouts"][layout] = asyncio.run(run_layout(layout, running, home, opts, say))
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def refusal(opts: Options, external_broker: str | None) -> str | None:
    """Why this mode cannot run with these settings (one line), or None."""
    if opts.secure:
        return "--layout cluster runs plaintext brokers (the local cluster has no --secure)"
    if opts.backends != ("postgres",):
        return "--layout cluster runs on PostgreSQL (instances of a service share its database)"
    if external_broker:
        return "--layout cluster starts its own broker and cluster: unset KAFKA_BOOTSTRAP_SERVERS"
    return None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finallies that stop everything


def main(opts: Options, as_json: bool, external_broker: str | None) -> int:
    """The mode's entry point (``bench.saga.main`` hands over): 0 when it ran, 2 on an error
    (this mode compares layouts; it has no targets to miss)."""
    why = refusal(opts, external_broker)
    if why is not None:
        print(f"bench.saga: {why}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="choreo-bench-layout-") as tmp:
            result = run(Path(tmp), opts)
    except Exception as exc:  # the report names the failure instead of a traceback wall
        logging.getLogger("bench").exception("benchmark failed: %s", exc)
        return 2
    print(json.dumps(result, indent=2) if as_json else render(result))
    return 0
