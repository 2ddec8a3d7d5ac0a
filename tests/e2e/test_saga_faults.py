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
from services.saga_check import (
    SERVICEABLE,
    World,
    check_invariants,
    order_body,
    place_http,
    seed,
    statuses,
)
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


def calling_out(stack: Stack, *restarted: str, **env: str) -> None:
    """Payments and shipping (and ``restarted``) restarted to call the stand-ins, with short
    batches as their settings choose when calling out, and ``env``."""
    names = ("payments", "shipping", *restarted)
    stack.stop(*names)
    stack.env.update(dependency_urls(stack.specs, environ={}), CONSUMER_BATCH="50", **env)
    stack.start(*names)


async def settled(world: World, stack: Stack, deadline_s: float = 120) -> None:
    """The invariants, the stand-ins' books included, hold within the deadline."""
    problems: list[str] = []

    async def clean() -> bool:
        problems[:] = await check_invariants(world, stack.api, dependencies=True)
        return not problems

    try:
        await eventually(clean, deadline_s=deadline_s, poll_s=1.0, what="the invariants")
    except AssertionError:
        pytest.fail("invariants violated:\n" + "\n".join(problems[:30]))


# The sagas take about 2 minutes on 2 cores, the invariants' 4,000 reads another two.
@pytest.mark.timeout(900)
async def test_a_thousand_orders_through_a_provider_outage_and_a_flaky_slow_carrier(
    stack: Stack,
):
    calling_out(stack)

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
    await settled(world, stack)

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


async def test_orders_timed_out_during_an_outage_are_cancelled_and_settled_with_the_provider(
    stack: Stack,
):
    # The watchdog still applies: with time-outs on, an order waiting on a provider that
    # is down past the saga's deadline is cancelled; once the provider is back, the held
    # payment meets the cancellation and is settled there (authorised again, voided).
    calling_out(
        stack, "orders", SAGA_DEADLINE_S="5", STUCK_SCAN_INTERVAL_S="1", SAGA_TIMEOUT_ENABLED="true"
    )
    world = World()
    kafka = KafkaConnection(stack.bootstrap)
    await seed(
        world,
        stack.codec,
        kafka,
        stack.api,
        stock={"widget": 100},
        deposits={"rich": 1_000_000},
        prices={"widget": 1500},
    )
    await put_faults(stack, "provider", down=True)
    for _ in range(20):
        body = order_body(world, "rich", [("widget", 1)], SERVICEABLE)
        await place_http(world, stack.api, "timed out", body)

    async def all_cancelled() -> bool:
        rows = await statuses(world, stack.api)
        return len(rows) == len(world.orders) and all(
            r["status"] == "CANCELLED" for r in rows.values()
        )

    await eventually(all_cancelled, deadline_s=120, poll_s=0.5, what="the orders timed out")
    await put_faults(stack, "provider", down=False)
    rows = await statuses(world, stack.api)
    assert {r["failed_step"] for r in rows.values()} <= {"payments", "inventory"}
    assert any(r["failed_step"] == "payments" for r in rows.values())
    # The held payments reach the provider once their partitions resume, after the
    # cancellations: asked for under their keys, then voided.
    ok = 'choreo_dependency_calls_total{dependency="provider",outcome="ok"}'

    async def answered() -> bool:
        return await metric(stack, "payments", ok) >= 2

    await eventually(answered, deadline_s=60, poll_s=0.5, what="the held payments' calls")
    await settled(world, stack)
