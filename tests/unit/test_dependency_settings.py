"""Payments' and shipping's settings for the system each calls: the same five settings after
a prefix of its own (PAYMENT_PROVIDER_*, CARRIER_*), one DependencySettings built from them."""

from __future__ import annotations

import pytest

from events.dependency import CALLING_OUT_BATCH, DependencySettings
from services.payments.app import Settings as PaymentsSettings
from services.shipping.app import Settings as ShippingSettings

CASES = [
    (PaymentsSettings, "PAYMENT_PROVIDER", "provider", lambda s: s.provider()),
    (ShippingSettings, "CARRIER", "carrier", lambda s: s.carrier()),
]


@pytest.mark.parametrize(("settings_cls", "prefix", "name", "dependency"), CASES)
def test_each_variable_after_the_prefix_reaches_the_dependency(
    monkeypatch: pytest.MonkeyPatch, settings_cls, prefix, name, dependency
):
    monkeypatch.setenv(f"{prefix}_URL", " http://127.0.0.1:9/ ")
    monkeypatch.setenv(f"{prefix}_TIMEOUT_S", "0.5")
    monkeypatch.setenv(f"{prefix}_ATTEMPTS", "7")
    monkeypatch.setenv(f"{prefix}_FAILURE_THRESHOLD", "9")
    monkeypatch.setenv(f"{prefix}_RECOVERY_S", "1.5")

    settings = settings_cls()

    assert dependency(settings) == DependencySettings(
        name=name,
        base_url="http://127.0.0.1:9",
        timeout_s=0.5,
        attempts=7,
        failure_threshold=9,
        recovery_s=1.5,
    )
    assert settings.consumer_batch <= CALLING_OUT_BATCH


@pytest.mark.parametrize(("settings_cls", "prefix", "name", "dependency"), CASES)
def test_no_url_no_dependency_and_a_bad_one_is_named(
    monkeypatch: pytest.MonkeyPatch, settings_cls, prefix, name, dependency
):
    monkeypatch.delenv(f"{prefix}_URL", raising=False)
    assert dependency(settings_cls()) is None

    monkeypatch.setenv(f"{prefix}_URL", "ftp://example.org")
    with pytest.raises(ValueError, match=f"{prefix}_URL must be an http:// or https:// URL"):
        settings_cls()
