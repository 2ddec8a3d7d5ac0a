"""The saga with its two external dependencies failing (issue 19): 1,000 orders down every
path while the payment provider is down for 30 s and the carrier refuses 20% of requests
and answers 200 ms late. Every order ends in exactly one terminal state, nothing is
dead-lettered, the provider's ledger equals payments' captures minus refunds per customer,
the carrier holds one live booking per completed order, and the demo's invariants hold.

The stack is the e2e one (every process of the manifest, stand-ins included); payments and
shipping are restarted with the stand-ins' URLs, as `choreo up` starts them.
"""

from __future__ import annotations

import time

import httpx
import pytest

from events.kafka import KafkaConnection
from services.saga_check import World, check_invariants, statuses
from services.tools.demo import EXPECTED, drive, outcome
from services.tools.startup import dependency_urls
from tests.e2e.conftest import Stack
from tests.integration.harness import topic_size
from tests.support import eventually

pytestmark = pytest.mark.e2e

ORDERS_PER_PATH = 200  # five paths: 1,000 orders
OUTAGE_S = 30


async def put_faults(stack: Stack, name: str, **faults: object) -> None:
    url = f"http://127.0.0.1:{stack.spec(name).port}/admin/faults"
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.put(url, json=faults)).raise_for_status()


async def metric(stack: Stack, service: str, line_start: str) -> float:
    """The sum of ``service``'s /metrics samples whose line starts with ``line_start``."""
    r = await stack.api.http.get(f"http://127.0.0.1:{stack.spec(service).port}/metrics")
    r.raise_for_status()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines() if line.startswith(line_start)
    )


async def test_a_thousand_orders_through_a_provider_outage_and_a_flaky_slow_carrier(
    stack: Stack,
):
    # Payments and shipping call the stand-ins from here on; short batches, as their
    # settings choose when calling out (a batch rolled back for an outage calls again).
    stack.stop("payments", "shipping")
    stack.env.update(dependency_urls(stack.specs, environ={}))
    stack.env.update(CONSUMER_BATCH="50")
    stack.start("payments", "shipping")

    world = World()
    await put_faults(stack, "carrier", failure_rate=0.2, latency_ms=200)
    kafka = KafkaConnection(stack.bootstrap)
    started = time.monotonic()
    # The provider goes down as the orders come in: every payment waits out the outage.
    await put_faults(stack, "provider", down_for_s=OUTAGE_S)
    await drive(world, stack.codec, kafka, stack.api, ORDERS_PER_PATH)
    assert len(world.orders) == 5 * ORDERS_PER_PATH

    async def ended() -> bool:
        rows = await statuses(world, stack.api)
        return len(rows) == len(world.orders) and all(
            r["status"] != "PENDING" for r in rows.values()
        )

    await eventually(ended, deadline_s=900, poll_s=1.0, what="every order to end")
    wall_s = time.monotonic() - started
    await put_faults(stack, "carrier", failure_rate=0.0, latency_ms=0)

    problems: list[str] = []

    async def settled() -> bool:
        problems[:] = await check_invariants(world, stack.api, dependencies=True)
        return not problems

    try:
        await eventually(settled, deadline_s=120, poll_s=1.0, what="the invariants")
    except AssertionError:
        pytest.fail("invariants violated:\n" + "\n".join(problems[:30]))

    rows = await statuses(world, stack.api)
    wrong = [
        f"{path} order {oid} ended {outcome(rows[oid])}"
        for oid, path in world.orders.items()
        if outcome(rows[oid]) not in EXPECTED[path]
    ]
    assert not wrong, "\n".join(wrong[:20])
    for topic in stack.codec.catalogue.topics:
        assert await topic_size(stack.bootstrap, f"{topic}.dlq") == 0, f"{topic}.dlq"
    # The outage was seen: payments' breaker opened and it paused rather than failing.
    opened = 'choreo_dependency_breaker_transitions_total{dependency="provider",to="open"}'
    assert await metric(stack, "payments", opened) >= 1
    print(f"\n{len(world.orders)} orders ended in {wall_s:.0f}s (provider down {OUTAGE_S}s)")
