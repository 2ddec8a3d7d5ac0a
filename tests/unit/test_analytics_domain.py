"""What analytics counts: events to facts, facts added up per window, windows served."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.analytics.domain import (
    COUNTED,
    MAX_REASONS,
    OTHER,
    Fact,
    Kind,
    WindowStats,
    fact_of,
    reason_category,
    saga_duration_ms,
)
from services.analytics.windows import (
    WINDOWS,
    BadQuery,
    analytics_json,
    parse_query,
    window_start,
)


def test_each_counted_event_type_gives_its_fact():
    assert fact_of("OrderCreated", {}) == Fact(Kind.PLACED)
    assert fact_of("OrderCompleted", {}, duration_ms=1500) == Fact(Kind.COMPLETED, duration_ms=1500)
    assert fact_of("OrderRejected", {"reason": "insufficient stock: SKU-1 (3)"}) == Fact(
        Kind.REJECTED, reason="insufficient stock"
    )
    assert fact_of("OrderCancelled", {"reason": "changed my mind"}, duration_ms=None) == Fact(
        Kind.CANCELLED, reason="changed my mind"
    )
    assert fact_of("PaymentCaptured", {"amount_cents": 2500}) == Fact(
        Kind.CAPTURED, amount_cents=2500
    )
    assert fact_of("PaymentRefunded", {"amount_cents": 400}) == Fact(
        Kind.REFUNDED, amount_cents=400
    )


@pytest.mark.parametrize("event_type", ["PaymentDeclined", "StockReserved", "OrderPlaced"])
def test_other_events_are_not_counted(event_type):
    assert event_type not in COUNTED
    assert fact_of(event_type, {}) is None


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("insufficient stock: SKU-1 (requested 3, available 1)", "insufficient stock"),
        ("address unserviceable: country AQ is not served", "address unserviceable"),
        ("insufficient funds", "insufficient funds"),
        ("", "unspecified"),
        ("  : details only", "unspecified"),
        ("x" * 200, "x" * 80),
    ],
)
def test_a_reason_counts_under_its_category(reason, category):
    assert reason_category(reason) == category


def test_saga_duration_needs_the_start_and_is_never_negative():
    assert saga_duration_ms(None, 100.0) is None
    assert saga_duration_ms(100.0, 101.5) == 1500.0
    assert saga_duration_ms(100.0, 99.0) == 0.0


def test_window_stats_add_up_facts():
    stats = WindowStats()
    for fact in [
        Fact(Kind.PLACED),
        Fact(Kind.PLACED),
        Fact(Kind.COMPLETED, duration_ms=1500),
        Fact(Kind.REJECTED, reason="insufficient stock", duration_ms=2000),
        Fact(Kind.CANCELLED, reason="insufficient stock"),
        Fact(Kind.CAPTURED, amount_cents=2500),
        Fact(Kind.REFUNDED, amount_cents=1000),
    ]:
        stats.add(fact)
    assert (stats.placed, stats.completed, stats.rejected, stats.cancelled) == (2, 1, 1, 1)
    assert (stats.captured_cents, stats.refunded_cents) == (2500, 1000)
    assert stats.failure_reasons == {"insufficient stock": 2}
    assert stats.durations.summary() == {"count": 2, "p50": 1500.0, "p90": 2000.0, "p99": 2000.0}
    assert WindowStats.from_json(stats.to_json()) == stats
    assert WindowStats.from_json(None) == WindowStats() == WindowStats.from_json({})


def test_failure_reasons_are_bounded_per_window():
    stats = WindowStats()
    for i in range(MAX_REASONS + 10):
        stats.add(Fact(Kind.CANCELLED, reason=f"reason {i}"))
    stats.add(Fact(Kind.CANCELLED, reason="reason 0"))  # a known reason still counts as itself
    assert len(stats.failure_reasons) == MAX_REASONS
    assert stats.failure_reasons[OTHER] == 11
    assert stats.failure_reasons["reason 0"] == 2
    assert sum(stats.failure_reasons.values()) == stats.cancelled


def test_merging_parts_equals_adding_all_facts_to_one():
    facts = [
        Fact(Kind.PLACED),
        Fact(Kind.COMPLETED, duration_ms=900),
        Fact(Kind.REJECTED, reason="a", duration_ms=3000),
        Fact(Kind.CAPTURED, amount_cents=7),
        Fact(Kind.CANCELLED, reason="b", duration_ms=12),
    ]
    whole, left, right = WindowStats(), WindowStats(), WindowStats()
    for i, fact in enumerate(facts):
        whole.add(fact)
        (left if i % 2 else right).add(fact)
    left.merge(right)
    assert left == whole


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_windows_are_aligned_on_the_epoch():
    assert window_start(ts("2025-03-01T12:07:59.999"), 60) == ts("2025-03-01T12:07:00")
    assert window_start(ts("2025-03-01T12:07:59"), 3600) == ts("2025-03-01T12:00:00")


def part(placed: int, ms: float | None = None) -> WindowStats:
    stats = WindowStats(placed=placed)
    if ms is not None:
        stats.durations.add(ms)
    return stats


def test_served_windows_sum_their_parts_oldest_first_and_honour_the_limit():
    minute = WINDOWS["minute"]
    t = ts("2025-03-01T12:00:00")
    parts = [
        (t + 120, part(1, 100)),
        (t, part(2, 300)),
        (t + 120, part(4, 200)),  # another partition's part of the same window
        (t + 60, part(8)),
    ]
    body = analytics_json(parts, minute, now=t + 300, limit=2)
    assert body["window"] == "minute" and body["size_s"] == 60
    assert [(w["start"], w["end"], w["placed"]) for w in body["windows"]] == [
        ("2025-03-01T12:01:00+00:00", "2025-03-01T12:02:00+00:00", 8),
        ("2025-03-01T12:02:00+00:00", "2025-03-01T12:03:00+00:00", 5),
    ]
    last = body["windows"][-1]
    assert last["duration_ms"] == {"count": 2, "p50": 100.0, "p90": 200.0, "p99": 200.0}
    assert set(last) == {
        "start",
        "end",
        "placed",
        "completed",
        "rejected",
        "cancelled",
        "captured_cents",
        "refunded_cents",
        "failure_reasons",
        "duration_ms",
    }


def test_expired_windows_are_not_served():
    hour = WINDOWS["hour"]
    t = ts("2025-03-01T12:00:00")
    parts = [(t, part(1)), (t + 3600, part(1))]
    now = t + hour.size_s + hour.expires_s + 1  # the first window is past its retention
    served = analytics_json(parts, hour, now=now, limit=10)["windows"]
    assert [w["start"] for w in served] == ["2025-03-01T13:00:00+00:00"]


def test_query_defaults_and_refusals():
    assert parse_query({}) == (WINDOWS["minute"], 60)
    assert parse_query({"window": "hour", "limit": "5"}) == (WINDOWS["hour"], 5)
    for bad in ({"window": "day"}, {"limit": "0"}, {"limit": "x"}, {"limit": "1001"}):
        with pytest.raises(BadQuery):
            parse_query(bad)
