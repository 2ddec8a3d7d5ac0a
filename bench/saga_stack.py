"""What the saga benchmark drives: every service of ``choreo up`` as processes (``Stack``), and
the raw baseline, a pipe of ``bench.raw_hop`` processes over 6 topics (``Pipe``); each seen as a
``bench.saga_load.Target``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import PARTITIONS, new_topic, unique
from bench.saga_load import PRICE_CENTS, Target
from bench.saga_watch import CompletionWatch, SagaBenchError, key_matcher, saga_matcher
from events.acl_admin import apply_acls
from events.acls import desired_acls, parties, principal
from events.auth import local_stack_auth, operator_bearer
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.settings import REPO_ROOT
from events.supervisor import ProcessSpec, load_manifest, replicate, start, stop, wait_ready
from events.topics import apply_topics
from infra.broker import free_ports
from services.saga_check import Api, World, seed
from services.tools.startup import dependency_urls

SKUS = 20
CUSTOMERS = 50
STOCK_PER_SKU = 1_000_000
DEPOSIT_CENTS = 10**12

# (event type, un-prefixed topic, the service that emitted it)
SAGA_STEPS: list[tuple[str, str, str]] = [
    ("OrderPlaced", "orders.requests", "bench"),
    ("OrderCreated", "orders.events", "orders"),
    ("StockReserved", "inventory.events", "inventory"),
    ("PaymentCaptured", "payments.events", "payments"),
    ("ShipmentScheduled", "shipping.events", "shipping"),
    ("OrderCompleted", "orders.events", "orders"),
    ("CustomerNotified", "notifications.events", "notifications"),  # after the 6 saga hops
]
HOPS = 5  # processes between the first and the last topic of a 6-topic pipe


@dataclass
class Stack:
    kafka: KafkaConnection
    prefix: str
    var_dir: Path
    specs: list[ProcessSpec]
    env: dict[str, str]
    api: Api
    pids: dict[str, int]


async def start_stack(
    kafka: KafkaConnection,
    root: Path,
    consumer_batch: int | None,
    extra_env: dict[str, str] | None = None,
    service_env: Callable[[str], Mapping[str, str]] = lambda name: {},
    replicas: int = 1,
    providers: bool = False,
) -> Stack:
    """Every service of ``choreo up``'s manifest (analytics and query included), isolated by
    a random topic prefix, with ``extra_env`` (database URLs, tracing) as their settings and
    ``service_env(name)`` as each one's own (its principal on the secured broker); with
    ``replicas`` > 1 as ``choreo up --replicas`` runs them (``events.supervisor.replicate``);
    with ``providers`` payments and shipping call the stand-ins (else they decide alone)."""
    prefix = unique("bench-saga") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    if any(t.partitions != PARTITIONS for t in catalogue.topics.values()):
        raise SagaBenchError(f"the saga's topics no longer all have {PARTITIONS} partitions")
    topics = list(catalogue.topics.values())
    await apply_topics(kafka, topics, replication=catalogue.replication)
    if kafka.uses_sasl:  # a secured broker: the catalogue's least-privilege ACLs, as deployed
        names = {principal(name) for name in parties(topics)}
        wanted = desired_acls(topics, prefix)
        await asyncio.to_thread(apply_acls, kafka, wanted, names, prefix=prefix)
    planned = replicate(load_manifest(), replicas)
    specs = [
        replace(s, port=port) for s, port in zip(planned, free_ports(len(planned)), strict=True)
    ]
    env = {"TOPIC_PREFIX": prefix, **(extra_env or {})}
    if providers:  # payments and shipping call the manifest's stand-ins, as choreo up has it
        env.update(dependency_urls(specs, environ={}))
    if consumer_batch is not None:
        env["CONSUMER_BATCH"] = str(consumer_batch)
    var_dir = root / prefix.rstrip(".")
    # Bearer tokens verified as deployed: a key of the run's own, an operator's token to read.
    auth_env, secret = local_stack_auth(var_dir, {})
    env.update(auth_env)

    async def start_one(spec: ProcessSpec) -> int:
        own = {**env, **service_env(spec.service_name)}
        (pid,) = await asyncio.to_thread(
            start, [spec], var_dir=var_dir, bootstrap=kafka.bootstrap, env=own
        )
        return pid

    firsts = [s for s in specs if not s.service]
    further = [s for s in specs if s.service]
    stack = Stack(
        kafka,
        prefix,
        var_dir,
        specs,
        env,
        Api({s.name: s.port for s in firsts}, operator_bearer(secret or "", 24 * 3600)),
        {s.name: await start_one(s) for s in firsts},
    )
    try:
        await asyncio.to_thread(wait_ready, firsts, var_dir=var_dir, deadline_s=120)
        # Further instances once the first of each is ready, as `choreo up` starts them: the
        # first creates the service's tables (instances doing it at once collide on PostgreSQL).
        for spec in further:
            stack.pids[spec.name] = await start_one(spec)
        await asyncio.to_thread(wait_ready, further, var_dir=var_dir, deadline_s=120)
    except BaseException:
        await stop_stack(stack)
        raise
    return stack


async def stop_stack(stack: Stack) -> None:
    with contextlib.suppress(Exception):
        await stack.api.close()
    await asyncio.to_thread(stop, stack.specs, var_dir=stack.var_dir)


async def saga_target(stack: Stack, name: str = "saga") -> Target:
    catalogue = Catalogue.load().prefixed(stack.prefix)
    codec = AvroCodec(catalogue)
    world = World()
    skus = [f"s{i}" for i in range(SKUS)]
    customers = [f"c{i}" for i in range(CUSTOMERS)]
    await seed(
        world,
        codec,
        stack.kafka,
        stack.api,
        stock={s: STOCK_PER_SKU for s in skus},
        deposits={c: DEPOSIT_CENTS for c in customers},
        prices={s: PRICE_CENTS for s in skus},
    )
    watch = CompletionWatch(stack.kafka, stack.prefix + "orders.events", saga_matcher(codec))
    await watch.start()
    return Target(
        name=name,
        codec=codec,
        watch=watch,
        stages=[(et, stack.prefix + topic, et) for et, topic, _ in SAGA_STEPS],
        groups=sorted({stack.prefix + s.service_name for s in stack.specs}),
        topics=sorted({stack.prefix + t for _, t, _ in SAGA_STEPS}),
        world=world,
        customers=customers,
        skus=skus,
        pids=dict(stack.pids),
    )


async def completed_count(stack: Stack) -> int:
    summary = await stack.api.get("orders", "/orders-summary") or {}
    bad = {k: v for k, v in summary.items() if k != "COMPLETED" and v}
    if bad:
        raise SagaBenchError(f"orders not all COMPLETED: {summary}")
    return int(summary.get("COMPLETED", 0))


# --------------------------------------------------------------------------- the raw pipe


@dataclass
class Pipe:
    topics: list[str]
    groups: list[str]
    procs: list[asyncio.subprocess.Process]


def connection_env(kafka: KafkaConnection) -> dict[str, str]:
    """``kafka`` as the ``KAFKA_*`` settings a child process reads (PlatformSettings)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
    }
    optional = {
        "KAFKA_SASL_MECHANISM": kafka.sasl_mechanism,
        "KAFKA_SASL_USERNAME": kafka.username,
        "KAFKA_SASL_PASSWORD": kafka.password.get_secret_value() if kafka.password else None,
        "KAFKA_SSL_CAFILE": kafka.ca_file,
        "KAFKA_SSL_CERTFILE": kafka.cert_file,
        "KAFKA_SSL_KEYFILE": kafka.key_file,
    }
    env.update({k: str(v) for k, v in optional.items() if v is not None})
    return env


async def start_pipe(kafka: KafkaConnection, value_sizes: Sequence[int]) -> Pipe:
    topics = [await new_topic(kafka, f"bench-raw-t{i}") for i in range(HOPS + 1)]
    groups = [unique(f"bench-raw-hop{i}") for i in range(1, HOPS + 1)]
    procs: list[asyncio.subprocess.Process] = []
    pipe = Pipe(topics, groups, procs)
    try:
        for i in range(HOPS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.raw_hop",
                    "--bootstrap",
                    kafka.bootstrap,
                    "--source",
                    topics[i],
                    "--sink",
                    topics[i + 1],
                    "--group",
                    groups[i],
                    "--value-size",
                    str(value_sizes[i]),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    cwd=REPO_ROOT,
                    # The same connection as the project's side (TLS, SASL) from the settings.
                    env={**os.environ, **connection_env(kafka)},
                )
            )
        async with asyncio.timeout(90):
            for i, proc in enumerate(procs):
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise SagaBenchError(f"raw hop {i + 1} did not start (exit {proc.returncode})")
    except BaseException:
        await stop_pipe(pipe)
        raise
    return pipe


async def stop_pipe(pipe: Pipe) -> None:
    for proc in pipe.procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in pipe.procs:
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def raw_target(kafka: KafkaConnection, pipe: Pipe) -> Target:
    codec = AvroCodec(Catalogue.load().retarget({"OrderPlaced": pipe.topics[0]}, 3))
    watch = CompletionWatch(kafka, pipe.topics[-1], key_matcher)
    await watch.start()
    world = World()
    return Target(
        name="raw pipe",
        codec=codec,
        watch=watch,
        stages=[(f"t{i}", t, None) for i, t in enumerate(pipe.topics)],
        groups=pipe.groups,
        topics=pipe.topics,
        world=world,
        customers=[f"c{i}" for i in range(CUSTOMERS)],
        skus=[f"s{i}" for i in range(SKUS)],
        pids={f"raw hop {i + 1}": p.pid for i, p in enumerate(pipe.procs) if p.pid is not None},
    )
