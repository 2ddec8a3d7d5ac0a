"""An order's timeline in causal order, and trace ids from traceparent headers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.query.timeline import Entry, causal_order, trace_id


def at(second: int) -> str:
    return f"2025-01-01T00:00:{second:02d}.000000+00:00"


def test_a_cause_precedes_its_effect_even_when_its_clock_is_ahead():
    created = Entry("e1", "OrderCreated", at(10), "placed")  # the request is not in the timeline
    reserved = Entry("e2", "StockReserved", at(5), "e1")  # inventory's clock is behind
    captured = Entry("e3", "PaymentCaptured", at(6), "e2")
    notified = Entry("e4", "CustomerNotified", at(7), None)  # unrelated: placed by time
    order = causal_order([captured, notified, reserved, created])
    assert [e.event_id for e in order] == ["e4", "e1", "e2", "e3"]


def test_ties_are_broken_by_time_then_type_then_id():
    a = Entry("b", "OrderCancelled", at(3), "x")
    b = Entry("a", "StockReleased", at(3), "x")
    c = Entry("c", "OrderCancelled", at(3), "x")
    assert [e.event_id for e in causal_order([b, c, a])] == ["b", "c", "a"]


def test_a_causation_cycle_still_lists_every_event():
    a = Entry("a", "X", at(1), "b")
    b = Entry("b", "X", at(2), "a")
    c = Entry("c", "X", at(0), None)
    assert [e.event_id for e in causal_order([a, b, c])] == ["c", "a", "b"]


chains = st.lists(st.integers(0, 59), min_size=1, max_size=25)


@given(chains, st.randoms())
def test_causes_first_and_the_same_order_whatever_the_input_order(seconds, rnd: random.Random):
    entries = []
    for i, second in enumerate(seconds):
        cause = f"e{rnd.randrange(i)}" if i and rnd.random() < 0.8 else None
        entries.append(Entry(f"e{i}", "T", at(second), cause))
    order = causal_order(entries)
    assert sorted(e.event_id for e in order) == sorted(e.event_id for e in entries)
    place = {e.event_id: i for i, e in enumerate(order)}
    for e in entries:
        if e.causation_id is not None:
            assert place[e.causation_id] < place[e.event_id]
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert causal_order(shuffled) == order


def test_trace_id_of_a_w3c_traceparent():
    assert trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short
    ],
)
def test_no_trace_id_without_a_valid_traceparent(value):
    assert trace_id(value) is None
