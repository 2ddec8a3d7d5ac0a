from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain import TERMINAL, Fact, Status, Transition, decide, order_total


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
