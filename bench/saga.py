"""``python -m bench.saga``: the reference system as users run it, under steady offered load.

Starts a private Kafka broker on free ports in a temporary directory (or uses
``KAFKA_BOOTSTRAP_SERVERS``); then, for each database backend (``--database``; both by
default: SQLite files, then a private PostgreSQL cluster with its durable defaults, see
``bench.saga_env``), every service of ``choreo up``'s manifest (``services/manifest.yaml``:
the saga's five, query and analytics) as processes, isolated by a random ``TOPIC_PREFIX``,
with tracing as shipped (``TRACE_EXPORTER=otlp``, the batch span processor, spans posted to
``bench.otlp_sink``, which drops them); seeds ample stock and balances and measures:

- warm-up (untimed): ``--warmup`` orders (default 1,000) through the whole saga at once, so
  that the broker's JIT, the services' statement plans and the databases' caches are warm
  (with 200 the broker still spent half again as much CPU per saga afterwards).
- idle: the stack's CPU while nothing is offered.
- the sweep (``bench.sweep``'s rules): steady offered load, orders placed on a 10 ms schedule
  for ``--step-seconds`` (default 30) per rate: 10, 50, 100 and 200 orders/s always (the
  report's rows), then up the ladder until a step fails, then bisection between the last
  pass and the first fail. A step passes when the completions keep up within 2% and p99 <=
  250 ms. An order's latency runs from its scheduled time (a late bench loop counts against
  the saga) until the bench has seen its ``OrderCompleted`` on the prefixed
  ``orders.events`` topic (the relay publishes only committed rows, so it is COMPLETED in the
  orders database; checked once at the end through ``GET /api/v1/orders-summary``).
- the burst (secondary; ``--no-burst``): ``--orders`` orders published at once with
  ``events.publisher.publish``; sagas/s = N / (publish start -> N ``OrderCompleted`` seen).
- CPU: utime+stime of every process from ``/proc``; "stack" = the services and the broker
  JVM (not this load generator, not the trace sink), per saga and as cores busy.

Then the raw baseline: 5 processes of ``bench.raw_hop`` (consumer -> idempotent producer,
acks=all, manual commit per batch) chained over 6 fresh 3-partition topics, values of the
saga events' sizes, key = order id, fed and watched the same way: its CPU per message chain
at 100/s (the ratio line compares it with the saga's CPU per saga at 100/s) and its burst
throughput (the ratio of the burst figures).

``--layout cluster`` is another mode (``bench.saga_cluster``): the single node and issue 18's
layout (a three-broker cluster, two instances of each saga service and query, orders POSTed
through the gateway) side by side at a steady rate on PostgreSQL.

The default run (both backends) took 8 minutes on a 2-core machine today, longer the further
the capacity search climbs; ``--quick`` is a 3-minute smoke run (SQLite, 5 s steps, rates
up to 300/s, no bisection). Exit status: 0 when every target of issue 15 is met, 1 when one
is missed, 2 on an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import wait_for_group_coordinator
from bench.cpu import CpuProbe
from bench.entry import Broker, on_a_secured_or_plain_broker, progress_for
from bench.saga_env import databases, trace_sink, tracing_env
from bench.saga_load import (
    BROKER,
    DB_SERVER,
    Progress,
    Target,
    fixed_rate,
    idle,
    sweep,
    throughput,
    warm_up,
)
from bench.saga_options import Options, parse_args
from bench.saga_report import render, targets
from bench.saga_stack import (
    HOPS,
    SAGA_STEPS,
    completed_count,
    raw_target,
    saga_target,
    start_pipe,
    start_stack,
    stop_pipe,
    stop_stack,
)
from bench.saga_watch import SagaBenchError
from events.acls import parties
from events.catalogue import Catalogue
from events.kafka import KafkaConnection
from events.supervisor import load_manifest

progress = progress_for("bench.saga")
ServiceEnv = Callable[[str], Mapping[str, str]]  # a service's own KAFKA_* settings


def service_names() -> list[str]:
    return [s.name for s in load_manifest()]


async def run_backend(
    kafka: KafkaConnection,
    workdir: Path,
    backend: str,
    opts: Options,
    jvm: dict[str, int],
    progress: Progress,
    service_env: ServiceEnv = lambda name: {},
    providers: bool = False,
) -> dict[str, Any]:
    """One stack on one database: warm-up, idle, the sweep, then the burst (``providers``:
    payments and shipping calling the stand-ins)."""
    names = service_names()
    label = f"{backend}+providers" if providers else backend
    async with contextlib.AsyncExitStack() as scope:
        sink = await scope.enter_async_context(trace_sink()) if opts.tracing else None
        urls, server_pid = scope.enter_context(databases(backend, names))
        progress(f"{label}: starting {len(names)} services ({', '.join(names)})")
        stack = await start_stack(
            kafka,
            workdir,
            opts.consumer_batch,
            {**urls, **tracing_env(sink)},
            service_env,
            providers=providers,
        )
        target: Target | None = None
        try:
            target = await saga_target(stack, f"saga on {label}")
            extra = {"otlp sink (Jaeger's stand-in)": sink.pid} if sink is not None else {}
            trees = {DB_SERVER: server_pid} if server_pid is not None else {}
            probe = CpuProbe({**target.pids, **extra}, jvm, trees)
            progress(f"{backend}: warm-up, {opts.warmup} orders")
            sizes = await warm_up(kafka, target, opts.warmup)
            idle_cpu = await idle(target, opts.idle_s, probe, progress)
            swept = await sweep(
                kafka,
                target,
                probe,
                step_s=opts.step_s,
                ladder=opts.ladder,
                bisections=opts.bisections,
                progress=progress,
            )
            burst = None
            if opts.burst:
                burst = await throughput(kafka, target, opts.burst, probe, progress)
            expected = opts.warmup + sum(st["n"] for st in swept["steps"]) + opts.burst
            completed = await completed_count(stack)
            if completed != expected:
                raise SagaBenchError(f"orders-summary: {completed} COMPLETED, expected {expected}")
            spans = await asyncio.to_thread(sink.stats) if sink is not None else None
        finally:
            if target is not None:
                await target.watch.close()
            progress(f"{backend}: stopping the services")
            await stop_stack(stack)
    return {
        "backend": label,
        "services": names,
        "value_sizes": sizes,
        "idle": idle_cpu,
        "sweep": swept,
        "burst": burst,
        "checked_completed": completed,
        "trace_exports": spans,
    }


async def run_raw(
    kafka: KafkaConnection,
    sizes: dict[str, int],
    opts: Options,
    jvm: dict[str, int],
    progress: Progress,
) -> dict[str, Any]:
    """The raw 6-hop pipe: its burst throughput and its CPU at ``opts.raw_rate``."""
    value_sizes = [sizes.get(et, 0) for et, _, _ in SAGA_STEPS[1 : HOPS + 1]]
    progress(f"starting the raw pipe: {HOPS} hop processes over {HOPS + 1} topics")
    pipe = await start_pipe(kafka, value_sizes)
    raw: Target | None = None
    try:
        raw = await raw_target(kafka, pipe)
        probe = CpuProbe(raw.pids, jvm)
        await warm_up(kafka, raw, opts.warmup)
        burst = await throughput(kafka, raw, opts.burst, probe, progress) if opts.burst else None
        steady = await fixed_rate(
            kafka, raw, opts.raw_rate, opts.step_s, probe, progress, stages=False
        )
    finally:
        if raw is not None:
            await raw.watch.close()
        await stop_pipe(pipe)
    return {"value_sizes": value_sizes, "burst": burst, "steady": steady}


async def run(
    kafka: KafkaConnection,
    *,
    workdir: Path,
    opts: Options,
    broker_pid: int | None = None,
    progress: Progress = lambda _: None,
    service_env: ServiceEnv = lambda name: {},
) -> dict[str, Any]:
    """Every measurement of this module; the dict is what ``--json`` prints."""
    started = time.perf_counter()
    await wait_for_group_coordinator(kafka)
    jvm = {BROKER: broker_pid} if broker_pid is not None else {}
    result: dict[str, Any] = {"options": asdict(opts), "backends": {}}
    for backend in opts.backends:
        result["backends"][backend] = await run_backend(
            kafka, workdir, backend, opts, jvm, progress, service_env
        )
    if opts.providers:  # the same backend again, the stand-ins in the path, beside it
        backend = opts.backends[0]
        result["backends"][f"{backend}+providers"] = await run_backend(
            kafka, workdir, backend, opts, jvm, progress, service_env, providers=True
        )
    first = result["backends"][opts.backends[0]]
    result["raw"] = await run_raw(kafka, first["value_sizes"], opts, jvm, progress)
    result["targets"] = targets(result)
    result["passed"] = all(t["passed"] for t in result["targets"])
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.split("\n\n")[0] if __doc__ else None)
    if args.opts.layout == "cluster":
        # Imported here: the layout mode builds on this module (run_raw).
        from bench.saga_cluster import main as layouts

        return layouts(args.opts, args.json, os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))

    def body(broker: Broker, root: Path) -> dict[str, Any]:
        workdir = root / "stacks"
        return asyncio.run(
            run(
                broker.kafka,
                workdir=workdir,
                opts=args.opts,
                broker_pid=broker.pid,
                progress=progress,
                service_env=broker.service_env,
            )
        )

    principals = sorted({*parties(Catalogue.load().topics.values()), *service_names()})
    result = on_a_secured_or_plain_broker(
        "choreo-bench-saga-", progress, body, args.opts.secure, principals
    )
    if result is None:
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
