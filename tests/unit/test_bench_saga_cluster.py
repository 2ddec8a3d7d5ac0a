"""``python -m bench.saga --layout cluster``: its settings, refusals, CPU groups, the HTTP
client's retry of refusals, and the side-by-side table."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from bench.saga_cluster import cpu_groups, refusal
from bench.saga_cluster_report import render
from bench.saga_http import HttpOrders
from bench.saga_options import parse_args


def test_cluster_layout_defaults_to_postgres_at_100_per_second() -> None:
    opts = parse_args(["--layout", "cluster"]).opts
    assert opts.layout == "cluster"
    assert opts.backends == ("postgres",)
    assert opts.ladder == (100,)
    assert refusal(opts, None) is None


def test_cluster_layout_keeps_the_rates_in_the_order_given() -> None:
    assert parse_args(["--layout", "cluster", "--rates", "100,20"]).opts.ladder == (100, 20)
    assert parse_args(["--rates", "100,20"]).opts.ladder == (20, 100)  # the sweep sorts


@pytest.mark.parametrize(
    ("argv", "external", "word"),
    [
        (["--database", "sqlite"], None, "PostgreSQL"),
        (["--database", "both"], None, "PostgreSQL"),
        (["--secure"], None, "plaintext"),
        ([], "127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_cluster_layout_refuses_what_it_cannot_run(
    argv: list[str], external: str | None, word: str
) -> None:
    why = refusal(parse_args(["--layout", "cluster", *argv]).opts, external)
    assert why is not None and word in why and "\n" not in why


def _cpu(rows: dict[str, float], units: int = 100, wall: float = 2.0) -> dict[str, Any]:
    return {
        "wall_s": wall,
        "units": units,
        "others_cores": 0.01,
        "stack_cores": sum(rows.values()) / wall,
        "stack_ms_per_unit": sum(rows.values()) * 1000 / units,
        "processes": [
            {"process": name, "cpu_s": s, "cpu_s_per_1000": s * 1000 / units, "cores": s / wall}
            for name, s in rows.items()
        ],
    }


def test_cpu_groups_sum_their_processes_per_saga_and_as_cores() -> None:
    cpu = _cpu({"broker 1 (JVM)": 0.2, "broker 2 (JVM)": 0.3, "orders": 1.0, "orders-2": 0.5})
    groups = cpu_groups(
        cpu, {"brokers": ["broker 1 (JVM)", "broker 2 (JVM)"], "services": ["orders", "orders-2"]}
    )
    assert groups["brokers"] == {"ms_per_saga": 5.0, "cores": 0.25}
    assert groups["services"] == {"ms_per_saga": 15.0, "cores": 0.75}
    assert groups["others (not ours)"]["cores"] == 0.01


def test_a_refused_post_is_retried_after_retry_after_and_counted() -> None:
    answers = iter([503, 429, 201])
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(next(answers), headers={"Retry-After": "0"}, json={})

    async def go() -> tuple[str, float, int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            orders = HttpOrders(None, client, "http://gateway/api/v1/orders")  # type: ignore[arg-type]
            return await orders.post({"order_id": "o-1"})

    outcome, _, refused = asyncio.run(go())
    assert (outcome, refused) == ("201", 2)
    assert len(seen) == 3 and len(set(seen)) == 1  # the same order each time


def test_another_failure_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"detail": "bad"})

    async def go() -> tuple[str, float, int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            orders = HttpOrders(None, client, "http://orders/api/v1/orders")  # type: ignore[arg-type]
            return await orders.post({"order_id": "o-2"})

    outcome, _, refused = asyncio.run(go())
    assert (outcome, refused, len(calls)) == ("422", 0, 1)


def _step(rate: float, done: float, p99: float, rows: dict[str, float]) -> dict[str, Any]:
    cpu = _cpu(rows)
    names = [n for n in rows if "JVM" not in n]
    jvms = [n for n in rows if "JVM" in n]
    return {
        "rate": rate,
        "completion_rate": done,
        "why": "kept up" if done >= rate else f"completed {done}/s",
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "post_ms": {"p50": 5.0, "p99": 20.0},
        "posts": {"201": 100},
        "orders_refused_once_or_more": 0,
        "cpu": cpu,
        "groups": cpu_groups(cpu, {"brokers": jvms, "services": names}),
        "stages": {"hops": [{"hop": "StockReserved -> PaymentCaptured", "n": 9, "p50": p99 / 10}]},
    }


def _layout(brokers: list[str], step: dict[str, Any], raw_ms: float) -> dict[str, Any]:
    raw_cpu = _cpu(dict.fromkeys(brokers, 0.1) | {"raw hop 1": 0.2})
    return {
        "brokers": brokers,
        "replication_factor": len(brokers),
        "instances": {"orders": 1},
        "idle": {"stack_cores": 0.1 * len(brokers)},
        "steps": [step],
        "raw": {
            "steady": {
                "rate": 100.0,
                "completion_rate": 100.0,
                "latency_ms": {"p50": 80.0, "p99": 100.0},
                "cpu": raw_cpu,
                "groups": cpu_groups(raw_cpu, {"brokers": brokers, "raw hops": ["raw hop 1"]}),
                "layout_ms_per_chain": raw_ms,
                "layout_cores": 0.5,
            }
        },
    }


def test_the_table_puts_the_layouts_side_by_side_with_the_ratio() -> None:
    single = _layout(["broker (JVM)"], _step(100, 60, 4000, {"broker (JVM)": 0.4}), 9.0)
    cluster = _layout(
        ["broker 1 (JVM)", "broker 2 (JVM)", "broker 3 (JVM)"],
        _step(100, 30, 8000, {"broker 1 (JVM)": 0.4, "broker 2 (JVM)": 0.4}),
        18.0,
    )
    result = {
        "options": {"tracing": True, "step_s": 30.0, "warmup": 1000},
        "elapsed_s": 600.0,
        "layouts": {"single": single, "cluster": cluster},
    }
    text = render(result)
    done = next(line for line in text.splitlines() if "done/s" in line and "offered" in line)
    assert "| 60 " in done and "| 30 " in done and "x0.50" in done
    p99 = next(line for line in text.splitlines() if "p99 ms (scheduled" in line)
    assert "x2.00" in p99
    assert "3 brokers (RF 3)" in text
    raw = next(line for line in text.splitlines() if "raw pipe: cores" in line)
    assert "x2.00" in raw
    hop = next(line for line in text.splitlines() if "hop StockReserved -> Payment" in line)
    assert "| 400 / -" in hop and "| 800 / -" in hop and "x2.00" in hop
