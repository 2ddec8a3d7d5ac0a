"""Saga durations per window: two significant digits, nearest-rank percentiles on read."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.analytics.histogram import DurationHistogram, bucket_of


@pytest.mark.parametrize(
    ("ms", "bucket"),
    [
        (0, 0),
        (-5, 0),  # clocks disagree a little: never a negative bucket
        (7.4, 7),
        (99, 99),
        (104, 100),
        (105, 110),  # half up
        (1549, 1500),
        (1550, 1600),
        (9960, 10000),  # rounding carries into the next decade
        (61234, 61000),
        (3_600_000, 3_600_000),
    ],
)
def test_a_duration_is_kept_to_two_significant_digits(ms, bucket):
    assert bucket_of(ms) == bucket


@given(st.floats(min_value=100, max_value=1e9))
def test_a_bucket_is_within_five_percent_of_the_duration(ms):
    assert abs(bucket_of(ms) - ms) <= 0.05 * ms + 0.5


def test_percentiles_are_nearest_rank():
    h = DurationHistogram.of([250, 400, 700, 900, 1200, 1500, 2000, 5000, 8000, 11000])
    assert h.summary() == {"count": 10, "p50": 1200.0, "p90": 8000.0, "p99": 11000.0}


def test_an_empty_histogram_has_no_percentiles():
    assert DurationHistogram().summary() == {"count": 0, "p50": None, "p90": None, "p99": None}


@given(
    st.lists(st.floats(min_value=0, max_value=1e8), min_size=1, max_size=200),
    st.sampled_from([1, 50, 90, 99, 100]),
)
def test_a_percentile_is_the_bucket_of_the_exact_nearest_rank(durations, q):
    exact = sorted(durations)[max(1, math.ceil(q / 100 * len(durations))) - 1]
    assert DurationHistogram.of(durations).percentile(q) == bucket_of(exact)


def test_merging_equals_counting_everything_in_one():
    a, b = DurationHistogram.of([100, 2000, 2000]), DurationHistogram.of([2000, 61234])
    a.merge(b)
    assert a == DurationHistogram.of([100, 2000, 2000, 2000, 61234])
    assert a.count == 5


def test_json_round_trip_keeps_every_bucket():
    h = DurationHistogram.of([3, 150, 150, 98765])
    assert h.to_json() == {"3": 1, "150": 2, "99000": 1}
    assert DurationHistogram.from_json(h.to_json()) == h
