"""`choreo up`/`demo` with SCHEMA_FORMAT=registry and no SCHEMA_REGISTRY_URL: the local schema
registry started (file storage, a home and port of the test's own through
CHOREO_REGISTRY_HOME/_PORT), the catalogue registered on it, and `choreo down`'s stop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from events.catalogue import Catalogue
from events.schema_registry import subject_of
from events.settings import PlatformSettings
from infra.broker import free_port
from infra.registry import default_spec, down, status
from services.tools.registry import STARTED_FILE, schema_env, stop_registry

pytestmark = [pytest.mark.integration, pytest.mark.no_database]


def test_up_starts_the_local_registry_registers_the_catalogue_and_down_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHOREO_REGISTRY_HOME", str(tmp_path / "registry"))
    monkeypatch.setenv("CHOREO_REGISTRY_PORT", str(free_port()))
    spec = default_spec()
    var = tmp_path / "var"
    catalogue = Catalogue.load().prefixed("n4t.")
    settings = PlatformSettings(var_dir=var, schema_format="registry")
    try:
        env = schema_env(settings, catalogue)
        assert env == {"SCHEMA_FORMAT": "registry", "SCHEMA_REGISTRY_URL": spec.ccompat_url}
        running = status(spec)
        assert running.running and running.storage == "file"  # ids outlive a restart
        assert (var / "run" / STARTED_FILE).exists()

        with httpx.Client(base_url=spec.ccompat_url, timeout=10) as api:
            subjects = set(api.get("/subjects").json())
            carried = {et for topic in catalogue.topics.values() for et in topic.event_types}
            on_topics = [t for t in catalogue.event_types if t in carried]
            assert on_topics
            for event_type in on_topics:
                latest = catalogue.latest(event_type)
                subject = subject_of(catalogue, latest)
                assert subject in subjects
                versions = api.get(f"/subjects/{subject}/versions").json()
                assert len(versions) == latest.version
                level = api.get(f"/config/{subject}").json()["compatibilityLevel"]
                assert level == "BACKWARD"

        # A second `up` finds it running and the catalogue registered: the same URL.
        assert schema_env(settings, catalogue) == env

        assert stop_registry(var, force=False) == "schema registry stopped"
        assert not status(spec).running
        assert not (var / "run" / STARTED_FILE).exists()
    finally:
        down(spec)
