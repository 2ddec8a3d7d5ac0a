"""What `choreo up` and `choreo demo` do about the schema registry, before any service starts:
nothing for single-object; for the registry format, the catalogue registered at the registry
the settings name and the services told the format and the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.cli.errors import CliError
from events.settings import PlatformSettings
from infra.broker import free_port
from services.tools.registry import STARTED_FILE, schema_env, stop_registry

URL = "http://registry.example:8081/apis/ccompat/v7"


def _settings(tmp_path: Path, **values: str) -> PlatformSettings:
    return PlatformSettings(var_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_single_object_registers_nothing_and_tells_the_services_nothing(tmp_path: Path) -> None:
    calls: list[str] = []
    env = schema_env(_settings(tmp_path), Catalogue.load(), lambda c, url: calls.append(url) or [])
    assert env == {}
    assert calls == []


def test_registry_format_registers_the_catalogue_where_the_settings_say(tmp_path: Path) -> None:
    catalogue = Catalogue.load().prefixed("t.")
    seen: list[tuple[Catalogue, str]] = []

    def register(c: Catalogue, url: str) -> list[str]:
        seen.append((c, url))
        return ["t.orders.events-choreo.orders.OrderPlaced: up to date; compatibility BACKWARD"]

    settings = _settings(tmp_path, schema_format="registry", schema_registry_url=URL)
    env = schema_env(settings, catalogue, register)
    assert env == {"SCHEMA_FORMAT": "registry", "SCHEMA_REGISTRY_URL": URL}
    assert seen == [(catalogue, URL)]
    # Someone else's registry: nothing started, so `choreo down` has nothing to stop.
    assert not (tmp_path / "run" / STARTED_FILE).exists()
    assert stop_registry(tmp_path, force=False) is None


def test_no_registry_at_the_url_stops_the_command_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"  # nothing listens there
    settings = _settings(tmp_path, schema_format="registry", schema_registry_url=url)
    with pytest.raises(CliError, match=f"registering the catalogue at {url} failed") as caught:
        schema_env(settings, Catalogue.load())
    assert "\n" not in str(caught.value)
