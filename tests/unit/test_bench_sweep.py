"""The saga benchmark's offered-load sweep: pass rules and the capacity search."""

from __future__ import annotations

from bench.sweep import backlog_limit, capacity, judge, next_rate

LADDER = (10, 50, 100, 200, 300, 500, 700, 1000)


def run_search(true_capacity: float, bisections: int = 2) -> tuple[list[float], float]:
    outcomes: dict[float, bool] = {}
    order = []
    while (rate := next_rate(outcomes, LADDER, bisections)) is not None:
        order.append(rate)
        outcomes[rate] = rate <= true_capacity
    return order, capacity(outcomes)


def test_reported_rates_come_first_then_the_ladder_then_bisection() -> None:
    order, found = run_search(260)
    assert order == [10, 50, 100, 200, 300, 250, 280]
    assert found == 250


def test_every_reported_rate_is_measured_even_below_a_fail() -> None:
    order, found = run_search(30)
    assert order[:4] == [10, 50, 100, 200]
    assert found == 30  # bisection between 10 and 50: 30, then 40 fails
    assert order[4:] == [30, 40]


def test_a_stack_that_keeps_up_everywhere_ends_at_the_top_of_the_ladder() -> None:
    order, found = run_search(10_000)
    assert order == list(LADDER)
    assert found == 1000


def test_nothing_passes() -> None:
    order, found = run_search(0.5)
    assert order[4:] == [5, 2]  # bisection below the lowest rung
    assert found == 0


def test_judge() -> None:
    assert judge(100, 100, 99, 120, aborted=False).passed
    assert not judge(100, 100, 97, 120, aborted=False).passed  # trails by more than 2%
    assert not judge(100, 100, 100, 260, aborted=False).passed
    assert not judge(100, 100, 100, 10, aborted=True).passed
    assert not judge(100, 90, 90, 10, aborted=False).passed  # the bench could not offer it


def test_backlog_limit_is_two_seconds_of_orders_and_at_least_twenty() -> None:
    assert backlog_limit(10) == 20
    assert backlog_limit(500) == 1000


def _step(rate: float, p99: float, cores: float, aborted: bool = False) -> dict[str, object]:
    return {"rate": rate, "aborted": aborted, "latency_ms": {"p99": p99},
            "cpu": {"stack_cores": cores}}  # fmt: skip


def test_targets_of_issue_15_from_a_run() -> None:
    from bench.saga_report import targets

    sqlite = {
        "idle": {"stack_cores": 0.1},
        "sweep": {"capacity": 1000.0, "steps": [_step(10, 50, 0.15), _step(100, 140, 0.4)]},
    }
    postgres = {"idle": {}, "sweep": {"capacity": 300.0, "steps": [_step(100, 900, 1.8, True)]}}
    got = {
        t["target"]: t["passed"]
        for t in targets({"backends": {"sqlite": sqlite, "postgres": postgres}})
    }
    assert got == {
        "SQLite sustained capacity": True,
        "SQLite p99 at 100 orders/s": True,
        "SQLite cores busy at 100 orders/s": True,
        "SQLite cores above idle at 10 orders/s": True,
        "PostgreSQL sustained capacity": False,
        "PostgreSQL p99 at 100 orders/s": False,  # a step the stack fell behind on
    }
