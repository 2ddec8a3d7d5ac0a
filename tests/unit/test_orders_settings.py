"""The orders service's saga-deadline settings: defaults, and one line naming a bad value."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from events.settings import settings_error
from services.orders.app import Settings


def test_deadlines_are_reported_not_enforced_by_default(monkeypatch: pytest.MonkeyPatch):
    for name in ("SAGA_DEADLINE_S", "STUCK_SCAN_INTERVAL_S", "SAGA_TIMEOUT_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.saga_deadline == timedelta(minutes=5)
    assert settings.stuck_scan_interval_s == 5
    assert settings.saga_timeout_enabled is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGA_DEADLINE_S", "0"),
        ("SAGA_DEADLINE_S", "soon"),
        ("STUCK_SCAN_INTERVAL_S", "-1"),
        ("STUCK_SCAN_INTERVAL_S", "7200"),
        ("SAGA_TIMEOUT_ENABLED", "maybe"),
    ],
)
def test_a_bad_value_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    message = settings_error(caught.value)
    assert message.startswith(f"{name}={value!r}") and "\n" not in message


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAGA_DEADLINE_S", "2.5")
    monkeypatch.setenv("STUCK_SCAN_INTERVAL_S", "0.5")
    monkeypatch.setenv("SAGA_TIMEOUT_ENABLED", "true")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.saga_deadline == timedelta(seconds=2.5)
    assert settings.saga_timeout_enabled is True
