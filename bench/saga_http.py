"""Orders placed over HTTP at a steady rate: ``POST /api/v1/orders`` as a client places them,
straight to an orders instance or through the gateway (``bench.saga_cluster``'s layouts).

The same 10 ms schedule as ``bench.saga_load.fixed_rate`` (which publishes ``OrderPlaced`` to
Kafka instead): each due order is one POST on its own task, so that a slow answer does not
hold back the schedule, with at most ``IN_FLIGHT`` POSTs in progress (a client's connection
pool; an order waiting for a slot waits on its clock). An order's latency runs from its
scheduled time to its ``OrderCompleted`` on Kafka (``bench.saga_watch``), so the client's
queue, the HTTP hop, orders' transaction and relay are inside it. The POST's own answer time
is kept apart. Offering stops early once ``BACKLOG_S`` seconds of orders wait (a layout that
cannot keep up: its completion rate is then its throughput, measured as it drains).

A 503 (an instance's cap on requests in progress) or a 429 (the gateway's rate limit) is
retried after its ``Retry-After``, as the API asks of a client, and counted: the wait is part
of that order's latency. Any other failure is counted, not retried, and its order is not
waited for.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import httpx

from bench.cpu import CpuProbe, cpu_between
from bench.saga_load import PRICE_CENTS, TICK_S, Progress, Target
from bench.saga_records import end_offsets, read_range, settle, stage_report, summary_ms
from bench.saga_watch import SagaBenchError
from bench.sweep import Verdict, judge
from events.kafka import KafkaConnection
from services.saga_check import SERVICEABLE, order_body

IN_FLIGHT = 32  # POSTs in progress at once: one instance's HTTP_MAX_CONCURRENT default
BACKLOG_S = 10.0
RETRIED = frozenset({429, 503})  # refusals that say "retry after"
RETRY_FOR_S = 120.0  # then the refusal counts as the POST's outcome
DRAIN_S = 300.0  # a layout that fell behind drains its backlog before anything else runs


class HttpOrders:
    """Where POSTs go (``url``: an orders instance's or the gateway's ``/api/v1/orders``)
    with ``client`` (the operator's bearer token in its headers)."""

    def __init__(self, target: Target, client: httpx.AsyncClient, url: str) -> None:
        self.target = target
        self.client = client
        self.url = url
        self._n = 0
        self._slots = asyncio.Semaphore(IN_FLIGHT)

    def body(self) -> dict[str, Any]:
        t = self.target
        self._n += 1
        cust = t.customers[self._n % len(t.customers)]
        sku = t.skus[self._n % len(t.skus)]
        body = order_body(t.world, cust, [(sku, 1, PRICE_CENTS)], SERVICEABLE)
        t.world.orders[body["order_id"]] = "success"
        t.world.lines[body["order_id"]] = body["lines"]
        t.world.customers.add(body["customer_id"])
        return body

    async def post(self, body: dict[str, Any]) -> tuple[str, float, int]:
        """(outcome, seconds, refusals retried): the final status code as text, or the
        error's class name."""
        async with self._slots:
            return await self._post(body)

    async def _post(self, body: dict[str, Any]) -> tuple[str, float, int]:
        began = time.perf_counter()
        refused = 0
        while True:
            try:
                reply = await self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.perf_counter() - began, refused
            if reply.status_code not in RETRIED or time.perf_counter() - began > RETRY_FOR_S:
                return str(reply.status_code), time.perf_counter() - began, refused
            refused += 1
            try:
                wait_s = float(reply.headers.get("Retry-After", "1"))
            except ValueError:
                wait_s = 1.0
            await asyncio.sleep(wait_s)  # what the refusal asks of a client


async def http_rate(
    kafka: KafkaConnection,
    orders: HttpOrders,
    rate: float,
    seconds: float,
    probe: CpuProbe,
    progress: Progress,
    *,
    label: str = "",
) -> dict[str, Any]:
    """``rate`` orders/s for ``seconds`` over HTTP, until every accepted order completed."""
    target = orders.target
    total = max(1, int(rate * seconds))
    progress(f"{label or target.name}: {rate:g} orders/s over HTTP for {seconds:g}s ({total})")
    starts = await end_offsets(kafka, target.topics)
    ids: list[str] = []
    posts: list[asyncio.Task[tuple[str, float, int]]] = []
    max_lag = 0.0
    aborted = False
    done_before = len(target.watch.latency)
    cpu0 = probe.sample()
    begin = time.perf_counter()
    sent = 0
    tick = 0
    while sent < total:
        tick += 1
        scheduled = begin + tick * TICK_S
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing on a schedule, not synchronisation
        max_lag = max(max_lag, time.perf_counter() - scheduled)
        if sent - (len(target.watch.latency) - done_before) > BACKLOG_S * rate:
            aborted = True
            break
        due = min(total, math.floor(rate * tick * TICK_S + 1e-9))
        for _ in range(due - sent):
            body = orders.body()
            target.watch.expect([body["order_id"]], scheduled)
            ids.append(body["order_id"])
            posts.append(asyncio.create_task(orders.post(body)))
        sent = max(sent, due)
    sending_s = time.perf_counter() - begin
    answers = await asyncio.gather(*posts)
    outcomes = Counter(outcome for outcome, _, _ in answers)
    accepted = [oid for oid, (outcome, _, _) in zip(ids, answers, strict=True) if outcome in OK]
    if not accepted:
        raise SagaBenchError(f"{label}: no POST accepted: {dict(outcomes)}")
    await target.watch.wait(done_before + len(accepted), DRAIN_S, f"{label} at {rate:g}/s")
    done_at = max(target.watch.arrived_at[i] for i in accepted)
    cpu1 = probe.sample()
    await settle(kafka, target.groups, target.topics)
    # Per hop from the records' timestamps (OrderCreated on: orders.requests is not used).
    records = await read_range(kafka, starts, await end_offsets(kafka, target.topics))
    stages = stage_report(records, target.stages[1:], set(accepted), None)
    n = len(accepted)
    sent_at = [target.watch.started[i] for i in ids]  # offered: every order scheduled
    arrived = [target.watch.arrived_at[i] for i in accepted]
    offered_s = max(sent_at) - min(sent_at)
    completed_s = max(arrived) - min(arrived)
    achieved = round((len(ids) - 1) / offered_s, 1) if offered_s > 0 else rate
    completion = round((n - 1) / completed_s, 1) if completed_s > 0 else rate
    latency = summary_ms(target.watch.latencies(accepted))
    verdict = judge(rate, achieved, completion, latency.get("p99", math.inf), False)
    if aborted:  # judge's own words for this speak of the sweep's 2 s
        verdict = Verdict(False, f"fell behind by {BACKLOG_S:g} s of orders; stopped early")
    return {
        "rate": rate,
        "n": n,
        "offered": len(ids),
        "aborted": aborted,
        "posts": dict(outcomes),
        "refusals_retried": sum(r for _, _, r in answers),
        "orders_refused_once_or_more": sum(1 for _, _, r in answers if r),
        "post_ms": summary_ms([s for _, s, _ in answers]),
        "achieved_rate": achieved,
        "completion_rate": completion,
        "max_schedule_lag_ms": round(max_lag * 1000, 1),
        "sending_s": round(sending_s, 3),
        "seconds": round(done_at - begin, 3),
        "latency_ms": latency,
        "passed": verdict.passed,
        "why": verdict.why,
        "cpu": cpu_between(cpu0, cpu1, n, stack=target.stack),
        "stages": stages,
    }


OK = frozenset({"200", "201"})  # 201: placed; 200: the same order again (idempotent)
