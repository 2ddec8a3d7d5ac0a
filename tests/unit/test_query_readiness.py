"""The query service's readiness: ready while the projection runs, advances and its lag
stays within READY_MAX_LAG, not only at lag 0."""

from __future__ import annotations

import pytest

from services.query.app import Settings, projection_readiness


def ready(lag: int | None, max_lag: int = 100, **kw: object) -> tuple[bool, list[str]]:
    args: dict[str, object] = {
        "started": True,
        "lag": lag,
        "caught_up": lag == 0,
        "stalled_since": None,
        "last_error": None,
        "max_lag": max_lag,
    }
    args.update(kw)
    state = projection_readiness(**args)  # type: ignore[arg-type]
    return state.ok, state.reasons


@pytest.mark.parametrize("lag", [0, 1, 99, 100])
def test_a_lag_within_the_bound_is_ready(lag: int) -> None:
    assert ready(lag) == (True, [])


def test_a_lag_over_the_bound_is_not_ready_and_says_so() -> None:
    assert ready(101) == (False, ["the projection is catching up (lag 101, ready at 100)"])


def test_a_bound_of_zero_means_caught_up_only() -> None:
    assert ready(0, max_lag=0)[0] and not ready(1, max_lag=0)[0]


def test_an_unknown_lag_or_a_stalled_or_unstarted_projection_is_not_ready() -> None:
    assert ready(None) == (
        False,
        ["the projection is catching up (lag not known yet, ready at 100)"],
    )
    ok, reasons = ready(5, stalled_since="2026-12-06T10:00:00Z", last_error="disk full")
    assert not ok and reasons == [
        "the projection cannot advance since 2026-12-06T10:00:00Z: disk full"
    ]
    assert ready(None, started=False) == (False, ["the projection is starting"])
    assert ready(0, answered=False) == (False, [])


def test_the_bound_is_a_setting_with_a_default_above_zero(monkeypatch) -> None:
    assert Settings().ready_max_lag > 0
    monkeypatch.setenv("READY_MAX_LAG", "7")
    assert Settings().ready_max_lag == 7
    monkeypatch.setenv("READY_MAX_LAG", "-1")
    with pytest.raises(ValueError, match="ready_max_lag"):
        Settings()
