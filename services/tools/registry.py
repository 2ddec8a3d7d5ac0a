"""The schema registry ``choreo up`` and ``choreo demo`` use when ``SCHEMA_FORMAT=registry``.

The registry the settings name (``SCHEMA_REGISTRY_URL`` set in the environment or ``.env``),
else the local one (:mod:`infra.registry`), started when it is not running: with file storage,
because the broker keeps its topics across restarts and the events on them name their schemas
by the registry's ids; an in-memory registry restarted could hand the same id to another
schema. The catalogue is registered there (every version, subjects set to BACKWARD) before any
service starts, and the services are told the format and the URL.

``choreo down`` stops the local registry when ``up`` or ``demo`` started it (a marker file in
``<VAR_DIR>/run``), or with ``--broker`` (all the local infrastructure).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from events.catalogue import Catalogue
from events.cli.errors import USAGE, CliError
from events.settings import PlatformSettings

STARTED_FILE = "registry-started"  # in <VAR_DIR>/run: `choreo up` started the local registry

Register = Callable[[Catalogue, str], list[str]]


def _register_catalogue(catalogue: Catalogue, url: str) -> list[str]:
    # Imported when used: the registry client only for the registry format.
    from events.schema_registry import RegistryError, RegistryUnavailable, register_catalogue

    try:
        return register_catalogue(catalogue, url)
    except (RegistryError, RegistryUnavailable) as exc:  # a refusal, or no registry there
        raise CliError(f"registering the catalogue at {url} failed: {exc}") from None


def schema_env(
    settings: PlatformSettings, catalogue: Catalogue, register: Register = _register_catalogue
) -> dict[str, str]:
    """The services' ``SCHEMA_FORMAT``/``SCHEMA_REGISTRY_URL``: nothing for single-object;
    for the registry format, the registry reached (the local one started) and the catalogue
    registered on it. CliError when the registry cannot be started or refuses a schema."""
    if settings.schema_format != "registry":
        return {}
    if "schema_registry_url" in settings.model_fields_set:
        url = settings.schema_registry_url  # someone else's registry: not ours to start
        print(f"schema registry: {url} (SCHEMA_REGISTRY_URL)")
    else:
        url = _local_registry(settings.var_dir)
    lines = register(catalogue, url)
    print(f"schemas at {url}: {len(lines)} subjects, BACKWARD")
    return {"SCHEMA_FORMAT": "registry", "SCHEMA_REGISTRY_URL": url}


def _local_registry(var_dir: Path) -> str:
    """The local registry's Confluent-compatible URL; started (file storage) if not running."""
    # Imported when needed: the registry module resolves java and Maven.
    from infra.registry import RegistryError, default_spec, status, up

    try:
        spec = default_spec(storage="file")
    except RegistryError as exc:  # CHOREO_REGISTRY_PORT is no port: a bad setting
        raise CliError(str(exc), USAGE) from None
    try:
        if status(spec).running:  # `choreo registry up` started it: keep it as it is
            print(f"schema registry running at {spec.ccompat_url}")
            return spec.ccompat_url
        print("starting the local schema registry ...", flush=True)
        st = up(spec)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    marker = var_dir / "run" / STARTED_FILE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{st.pid}\n")
    print(f"schema registry running at {spec.ccompat_url} (log {st.log_file})")
    return spec.ccompat_url


def stop_registry(var_dir: Path, force: bool) -> str | None:
    """Stops the local registry if ``up``/``demo`` started it, or whatever started it with
    ``force``; a line saying what happened, None when there was nothing to do."""
    marker = var_dir / "run" / STARTED_FILE
    started = marker.exists()
    if not force and not started:
        return None
    from infra.registry import RegistryError, default_spec, down

    try:
        stopped = down(default_spec())
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    marker.unlink(missing_ok=True)
    if stopped:
        return "schema registry stopped"
    # Said only when `up` had started one: with --broker alone, no registry is no news.
    return "schema registry was not running" if started else None
