from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain import (
    STEPS,
    TERMINAL,
    Fact,
    PricingRefused,
    Progress,
    Requested,
    Status,
    Step,
    Transition,
    Waiting,
    advance,
    deadline,
    decide,
    is_overdue,
    order_total,
    price_lines,
    time_out_reason,
    waiting_when_created,
)


@pytest.mark.parametrize(
    ("fact", "status", "step"),
    [
        (Fact.STOCK_REJECTED, Status.REJECTED, "inventory"),
        (Fact.PAYMENT_DECLINED, Status.CANCELLED, "payments"),
        (Fact.SHIPMENT_FAILED, Status.CANCELLED, "shipping"),
        (Fact.CANCEL_REQUESTED, Status.CANCELLED, None),
        (Fact.SHIPMENT_SCHEDULED, Status.COMPLETED, None),
    ],
)
def test_a_pending_order_ends_as_the_first_fact_says(fact, status, step):
    t = decide(Status.PENDING, fact, "why")
    assert t == Transition(status, None if status is Status.COMPLETED else "why", step)


@given(st.sampled_from(sorted(TERMINAL)), st.lists(st.sampled_from(list(Fact)), max_size=5))
def test_an_ended_order_never_changes(status, facts):
    for fact in facts:
        assert decide(status, fact, "late") is None


@given(st.lists(st.sampled_from(list(Fact)), min_size=1, max_size=8))
def test_exactly_one_terminal_state_whatever_the_order_of_facts(facts):
    status, transitions = Status.PENDING, 0
    for fact in facts:
        t = decide(status, fact)
        if t is not None:
            status, transitions = t.status, transitions + 1
    assert transitions == 1 and status in TERMINAL


def test_a_cancel_that_loses_the_race_to_shipping_is_ignored():
    completed = decide(Status.PENDING, Fact.SHIPMENT_SCHEDULED)
    assert completed is not None and completed.status is Status.COMPLETED
    assert decide(completed.status, Fact.CANCEL_REQUESTED, "too late") is None


def test_order_total_sums_lines():
    assert order_total([(2, 150), (1, 1000)]) == 1300
    assert order_total([]) == 0


# --- where a pending order waits, and its deadline --------------------------------------------

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_a_new_order_waits_on_inventory_then_payments_then_shipping():
    waiting = waiting_when_created(T0)
    assert waiting == Waiting(Step.INVENTORY, T0)
    reserved = advance(Status.PENDING, waiting.step, Progress.STOCK_RESERVED, T0 + timedelta(1))
    assert reserved == Waiting(Step.PAYMENTS, T0 + timedelta(1))
    captured = advance(Status.PENDING, reserved.step, Progress.PAYMENT_CAPTURED, T0 + timedelta(2))
    assert captured == Waiting(Step.SHIPPING, T0 + timedelta(2))


def test_a_step_never_moves_back_nor_again():
    # The capture can reach orders before the reservation that caused it (other topic).
    assert advance(Status.PENDING, Step.SHIPPING, Progress.STOCK_RESERVED, T0) is None
    assert advance(Status.PENDING, Step.PAYMENTS, Progress.STOCK_RESERVED, T0) is None  # again
    skipped = advance(Status.PENDING, Step.INVENTORY, Progress.PAYMENT_CAPTURED, T0)
    assert skipped == Waiting(Step.SHIPPING, T0)


@given(
    st.sampled_from(sorted(TERMINAL)),
    st.sampled_from([None, *Step]),
    st.sampled_from(list(Progress)),
)
def test_an_ended_order_waits_on_nothing_new(status, step, progress):
    assert advance(status, step, progress, T0) is None


@given(st.lists(st.sampled_from(list(Progress)), max_size=6))
def test_steps_only_climb_whatever_the_order_of_progress(progress):
    step: Step | None = Step.INVENTORY
    for p in progress:
        moved = advance(Status.PENDING, step, p, T0)
        if moved is not None:
            assert STEPS.index(moved.step) > STEPS.index(step)
            step = moved.step


def test_an_order_is_overdue_once_pending_past_its_deadline_and_not_flagged():
    due = deadline(T0, timedelta(minutes=5))
    assert due == T0 + timedelta(minutes=5)
    assert not is_overdue(Status.PENDING, due, None, due - timedelta(microseconds=1))
    assert is_overdue(Status.PENDING, due, None, due)
    assert not is_overdue(Status.PENDING, due, due, due + timedelta(hours=1))  # flagged already
    for ended in TERMINAL:
        assert not is_overdue(ended, due, None, due + timedelta(hours=1))


def test_a_time_out_cancels_a_pending_order_naming_the_step_like_a_customer_cancel():
    reason = time_out_reason(Step.SHIPPING)
    assert reason == "timed out waiting on shipping"
    t = decide(Status.PENDING, Fact.TIMED_OUT, reason, failed_step=Step.SHIPPING.value)
    assert t == Transition(Status.CANCELLED, reason, "shipping")
    # The race rules are the customer cancel's: too late once the order ended.
    for ended in TERMINAL:
        assert decide(ended, Fact.TIMED_OUT, reason, failed_step="shipping") is None
    # A fact that implies its step keeps it.
    assert decide(Status.PENDING, Fact.SHIPMENT_FAILED, "x", failed_step="payments") == (
        Transition(Status.CANCELLED, "x", "shipping")
    )


# --- pricing ------------------------------------------------------------------------------

PRICES = {"A": 150, "B": 1_000}


def test_lines_are_priced_by_the_platform_when_the_client_omits_the_price():
    assert price_lines([Requested("A", 2), Requested("B", 1)], PRICES) == [150, 1_000]


def test_a_client_price_equal_to_the_platforms_is_accepted():
    assert price_lines([Requested("A", 2, 150)], PRICES) == [150]


def test_an_unknown_sku_and_a_wrong_price_are_both_named():
    with pytest.raises(PricingRefused) as refused:
        price_lines([Requested("A", 1, 99), Requested("Z", 1), Requested("B", 1)], PRICES)
    problems = refused.value.problems
    assert [(p.line, p.sku, p.kind) for p in problems] == [
        (0, "A", "price_mismatch"),
        (1, "Z", "unknown_sku"),
    ]
    assert "unit_price_cents 99 is not the platform's price 150" in str(refused.value)
    assert "unknown SKU 'Z'" in str(refused.value)


@given(st.integers(0, 10**10), st.integers(0, 10**10))
def test_only_the_platforms_price_is_ever_charged(platform, sent):
    try:
        charged = price_lines([Requested("A", 1, sent)], {"A": platform})
    except PricingRefused:
        assert sent != platform
    else:
        assert charged == [platform] and sent == platform
