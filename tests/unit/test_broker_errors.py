"""Launcher errors that need no broker: one line that says what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.broker import BrokerError, BrokerSpec, ensure_jars, up


def _nothing_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda *_args, **_kwargs: None)


def test_missing_java_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _nothing_on_path(monkeypatch)

    with pytest.raises(BrokerError) as failure:
        up(BrokerSpec(home=Path("/nonexistent/choreo-kafka")))

    assert str(failure.value) == (
        "java not found on PATH: install a JDK 17+ "
        "(`make jdk` does, from Debian's default-jdk-headless)"
    )


def test_missing_maven_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _nothing_on_path(monkeypatch)

    with pytest.raises(BrokerError) as failure:
        ensure_jars(tmp_path / "empty-cache")

    assert str(failure.value) == (
        "mvn not found on PATH: install Maven 3 (Debian: apt-get install maven)"
    )
