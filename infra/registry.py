"""The local schema registry: Apicurio Registry started from its Maven Central release.

A real registry, not one written here: Apicurio's Confluent-compatible API
(``/apis/ccompat/v7``) is what Confluent's and Apicurio's serializers, Kafka Connect and
ksqlDB speak. ``infra/registry/pom.xml`` fetches Apicurio's own release distribution (the
Quarkus application its release build packaged) and this module starts it as a plain JVM
process, like the broker in :mod:`infra.broker`: everything it owns (pid file, log, the
file-backed database) lives under its *home*, so several run side by side on different ports.

    spec = default_spec()   # <repo>/var/registry on http://127.0.0.1:8081
    up(spec)                # starts it, waits until /health/ready says UP
    down(spec)              # SIGTERM, then SIGKILL after the deadline

Storage is Apicurio's embedded H2 database: in memory by default (gone at ``down``), or
``storage="file"`` in ``<home>/data`` (kept across restarts).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from infra.locks import exclusive
from infra.processes import (
    HOST,
    LocalHome,
    file_size,
    free_port,
    maven_fetch,
    owned_pid,
    port_open,
    read_from,
    repo_root,
    start,
    stop,
    wait_for_start,
    which,
)

__all__ = [
    "RegistryError",
    "RegistrySpec",
    "RegistryStatus",
    "Storage",
    "default_spec",
    "down",
    "ensure_app",
    "private_spec",
    "status",
    "up",
]

Storage = Literal["memory", "file"]

_HOST = HOST
_DEFAULT_PORT = 8081  # the port Confluent's registry and its clients' examples use
# Names the home on the JVM's command line, so a pid is recognised as this home's registry.
_HOME_PROPERTY = "choreo.registry.home"
_FILE_DATABASE_ARG = b"-Dapicurio.datasource.url=jdbc:h2:file:"
_POM = Path(__file__).resolve().parent / "registry" / "pom.xml"


class RegistryError(Exception):
    """The local registry cannot be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class RegistrySpec(LocalHome):
    """Where a registry lives, the loopback port it serves on and how it stores schemas.
    Its ``log_file`` is the JVM's stdout/stderr: Quarkus logs to the console."""

    pid_name: ClassVar[str] = "registry.pid"
    log_name: ClassVar[str] = "registry.log"

    port: int = _DEFAULT_PORT
    heap_mb: int = 256
    storage: Storage = "memory"

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """The Confluent-compatible API: what a Confluent ``SchemaRegistryClient`` takes."""
        return f"{self.url}/apis/ccompat/v7"


@dataclass
class RegistryStatus:
    running: bool
    pid: int | None
    url: str
    log_file: Path
    storage: Storage | None  # how the process found runs; None when none runs


def default_spec(storage: Storage = "memory") -> RegistrySpec:
    """``<repo>/var/registry`` on port 8081, unless ``CHOREO_REGISTRY_HOME``/``_PORT`` say."""
    home = Path(os.environ.get("CHOREO_REGISTRY_HOME") or repo_root() / "var" / "registry")
    port_text = os.environ.get("CHOREO_REGISTRY_PORT")
    port = _DEFAULT_PORT
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise RegistryError(
                f"CHOREO_REGISTRY_PORT must be a port number, got {port_text!r}"
            ) from None
    return RegistrySpec(home=home.resolve(), port=port, storage=storage)


def private_spec(home: Path, storage: Storage = "memory") -> RegistrySpec:
    """A registry of its own (tests, benchmarks): a fresh home and a free port."""
    return RegistrySpec(home=home, port=free_port(), storage=storage)


# --------------------------------------------------------------------------- the app


def ensure_app(cache: Path | None = None) -> Path:
    """The registry's runner jar; fetched and unpacked with Maven when missing."""
    app = (cache or repo_root() / ".cache" / "registry") / "app"
    goal = ["dependency:unpack", f"-Dregistry.app.dir={app}"]
    maven_fetch(
        _POM,
        app,
        goal,
        RegistryError,
        "fetching Apicurio Registry",
        complete=lambda: bool(_runner(app)),
    )
    return _runner(app)


def _runner(app: Path) -> Path:
    """Apicurio's legacy-jar layout (``*-runner.jar`` beside ``lib/``), or the fast-jar one
    (``quarkus-run.jar``) that its later releases ship."""
    found = sorted(app.glob("*-runner.jar")) or sorted(app.glob("quarkus-run.jar"))
    if not found:
        raise RegistryError(f"no runner jar in {app}: the unpacked registry is incomplete")
    return found[0]


# --------------------------------------------------------------------------- lifecycle


def status(spec: RegistrySpec) -> RegistryStatus:
    """Running means: the pid file names a live registry of this home AND it reports ready."""
    pid = _registry_pid(spec)
    running = pid is not None and _ready(spec)
    return RegistryStatus(
        running=running,
        pid=pid,
        url=spec.url,
        log_file=spec.log_file,
        storage=None if pid is None else _storage_of(pid),
    )


def up(spec: RegistrySpec, timeout: float = 120.0) -> RegistryStatus:
    """Start the registry unless it runs already; return once its readiness check is UP."""
    deadline = time.monotonic() + timeout
    java = which("java", RegistryError)
    spec.home.mkdir(parents=True, exist_ok=True)
    with exclusive(spec.home / ".lock"):
        pid = _registry_pid(spec)
        if pid is not None:  # running, or started by someone else and starting up
            running_storage = _storage_of(pid)
            if running_storage != spec.storage:
                raise RegistryError(
                    f"the registry in {spec.home} runs with {running_storage} storage, not "
                    f"{spec.storage}: stop it first (choreo registry down)"
                )
            _wait_until_ready(spec, pid, None, deadline, file_size(spec.log_file))
            return status(spec)
        if port_open(spec.port):
            raise RegistryError(
                f"port {spec.port} on {_HOST} is already in use by another process: stop it "
                f"or choose another port (CHOREO_REGISTRY_PORT)"
            )
        runner = ensure_app()
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_seen = file_size(spec.log_file)
        process = _start(spec, java, runner)
        spec.pid_file.write_text(f"{process.pid}\n")
        _wait_until_ready(spec, process.pid, process, deadline, log_seen)
        return status(spec)


def down(spec: RegistrySpec, timeout: float = 30.0) -> bool:
    """Stop the registry (SIGTERM, SIGKILL after ``timeout``); return whether one was running."""
    return stop(spec, _registry_pid(spec), timeout, RegistryError)


# --------------------------------------------------------------------------- internals


def _system_properties(spec: RegistrySpec) -> list[str]:
    """Quarkus reads its settings from system properties; these override the app's own."""
    if spec.storage == "file":
        database = f"jdbc:h2:file:{spec.data_dir / 'registry'}"
    else:
        # Named after the port: two in-memory registries in one JVM never happen, but a
        # readable name helps in the log.
        database = f"jdbc:h2:mem:registry_{spec.port}"
    properties = {
        _HOME_PROPERTY: spec.home,
        "quarkus.http.host": _HOST,
        "quarkus.http.port": spec.port,
        # A line per request would fill the log during a benchmark; errors are still logged.
        "quarkus.http.access-log.enabled": "false",
        "apicurio.datasource.url": database,
        # The app's pool holds 20 connections from the start, sized for a shared server; a
        # local registry's few clients need a handful.
        "apicurio.datasource.jdbc.initial-size": 2,
        "apicurio.datasource.jdbc.min-size": 2,
        "apicurio.datasource.jdbc.max-size": 16,
    }
    return [f"-D{key}={value}" for key, value in properties.items()]


def _jvm_options(spec: RegistrySpec) -> list[str]:
    return [
        "-Xms64m",
        f"-Xmx{spec.heap_mb}m",
        # One GC thread and the C1 compiler only: a local registry answers a few lookups per
        # schema (clients cache by id), so on a 2-core machine the optimising compiler's and
        # parallel GC's threads cost more CPU than they save.
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *_system_properties(spec),
    ]


def _start(spec: RegistrySpec, java: str, runner: Path) -> subprocess.Popen[bytes]:
    if spec.storage == "file":
        spec.data_dir.mkdir(parents=True, exist_ok=True)
    return start([java, *_jvm_options(spec), "-jar", str(runner)], spec.log_file, spec.home)


def _ready(spec: RegistrySpec) -> bool:
    """Quarkus's readiness check (database reachable, storage ready): HTTP 200 when UP."""
    try:
        with urllib.request.urlopen(f"{spec.url}/health/ready", timeout=2.0) as response:
            return int(response.status) == 200
    except OSError:  # refused, reset, or HTTPError's 503 while starting (URLError is one)
        return False


def _wait_until_ready(
    spec: RegistrySpec,
    pid: int,
    process: subprocess.Popen[bytes] | None,
    deadline: float,
    log_seen: int,
) -> None:
    started = wait_for_start(pid, process, deadline, lambda _remaining: _ready(spec))
    if started == "exited":
        spec.pid_file.unlink(missing_ok=True)
        reason = _crash_reason(read_from(spec.log_file, log_seen))
        raise RegistryError(
            f"the schema registry exited during start-up: {reason} (see {spec.log_file})"
        )
    if started == "late":
        raise RegistryError(
            f"the schema registry pid {pid} was not ready at {spec.url} in time; "
            f"see {spec.log_file} (stop it with down())"
        )


def _registry_pid(spec: RegistrySpec) -> int | None:
    """The pid from the pid file if that process is alive and is this home's registry."""
    return owned_pid(spec.pid_file, f"-D{_HOME_PROPERTY}={spec.home}".encode())


def _storage_of(pid: int) -> Storage:
    """The storage a running registry was started with, from its command line."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc: assume the default
        return "memory"
    return "file" if any(arg.startswith(_FILE_DATABASE_ARG) for arg in args) else "memory"


def _crash_reason(output: str) -> str:
    """Quarkus's ``ERROR`` line (it holds the exception and its message), else the JVM's last
    exception or error line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("at ", "..."))]
    for line in lines:
        if re.search(r"\bERROR\b", line):
            return line
    for line in reversed(lines):
        if re.search(r"(Exception|Error)\b", line):
            return line
    return lines[-1] if lines else "no output"
