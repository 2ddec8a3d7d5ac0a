"""Starting and stopping service processes for local use (`choreo up` / `choreo down`).

Each service is a separate OS process with its log in ``var/logs/<name>.log`` and its pid in
``var/run/<name>.pid``. The list of services comes from a manifest file, so the platform
never imports a service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from events.db import sqlite_url
from events.settings import REPO_ROOT

MANIFEST = REPO_ROOT / "services" / "manifest.yaml"
OLD_PROCESS_WAIT_S = 10.0
"""How long `start` waits for a killed service's process to be gone and its port free."""


class SupervisorError(Exception):
    """A service would not start or stop; the message is one line."""


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # the process's name: the service's, or ``<service>-<k>`` for a further instance
    module: str
    port: int
    service: str = ""  # the service it is an instance of (empty: ``name``)
    replicated: bool = True  # False: one instance only (the manifest's ``replicas: 1``)
    # True (the manifest's ``database: per-instance``): each instance keeps a database of
    # its own (a read model rebuilt from the log), ``<NAME>_DATABASE_URL`` by instance name.
    own_database: bool = False
    # True (the manifest's ``stand_in: true``): a stand-in for a third party the services
    # call over HTTP; no Kafka client, so no consumer, dead letters or parked events.
    stand_in: bool = False

    @property
    def service_name(self) -> str:
        return self.service or self.name


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    url: str
    log_file: Path


def load_manifest(path: Path = MANIFEST) -> list[ProcessSpec]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [
        ProcessSpec(
            name,
            str(body["module"]),
            int(body["port"]),
            replicated=body.get("replicas", "any") != 1,
            own_database=body.get("database") == "per-instance",
            stand_in=bool(body.get("stand_in", False)),
        )
        for name, body in (doc.get("services") or {}).items()
    ]


MAX_REPLICAS = 9
REPLICA_PORT_STEP = 100
"""Instance k of a service listens on its manifest port + (k - 1) * 100: 8101, 8201, ..."""


def replicate(specs: Sequence[ProcessSpec], replicas: int) -> list[ProcessSpec]:
    """The processes to run for ``replicas`` instances of each replicated service: the
    first keeps the service's name and port (one instance is today's layout), instance k
    is ``<name>-<k>`` on port + (k - 1) * 100; a ``replicas: 1`` service stays one."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise SupervisorError(f"replicas must be 1 to {MAX_REPLICAS}, not {replicas}")
    out: list[ProcessSpec] = []
    for spec in specs:
        out.append(spec)
        if spec.replicated:
            out.extend(
                ProcessSpec(
                    f"{spec.name}-{k}",
                    spec.module,
                    spec.port + (k - 1) * REPLICA_PORT_STEP,
                    service=spec.name,
                    own_database=spec.own_database,
                )
                for k in range(2, replicas + 1)
            )
    return out


def shared_sqlite(
    specs: Sequence[ProcessSpec],
    replicas: int,
    var_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why ``replicas`` instances cannot run (one line), or None: instances of a service
    share its database, and SQLite is one process per file, so every replicated service
    that keeps a database needs ``<NAME>_DATABASE_URL`` naming PostgreSQL."""
    if replicas <= 1:
        return None
    env = os.environ if environ is None else environ
    shared = [s for s in specs if s.replicated and not s.own_database and not s.service]
    names = [s.name for s in shared if database_url(s.name, var_dir, env).startswith("sqlite")]
    if not names:
        return None
    fix = ", ".join(f"{n.upper()}_DATABASE_URL" for n in names)
    return (
        f"--replicas {replicas} needs PostgreSQL for {', '.join(names)} (a service's "
        f"instances share its database; SQLite is one process per file): set {fix} to "
        "postgresql+asyncpg://..., or run one replica"
    )


def upstreams(specs: Sequence[ProcessSpec], host: str = "127.0.0.1") -> dict[str, list[str]]:
    """Each service's instances as ``host:port``, in plan order (what a gateway balances)."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        out.setdefault(spec.service_name, []).append(f"{host}:{spec.port}")
    return out


REPLICAS_FILE = "replicas"


def record_replicas(var_dir: Path, replicas: int) -> None:
    """What ``choreo up`` started, so ``ps`` and ``down`` see every instance."""
    path = var_dir / "run" / REPLICAS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{replicas}\n")


def recorded_replicas(var_dir: Path) -> int:
    try:
        return max(1, min(MAX_REPLICAS, int((var_dir / "run" / REPLICAS_FILE).read_text())))
    except (FileNotFoundError, ValueError):
        return 1


def running_plan(var_dir: Path, path: Path = MANIFEST) -> list[ProcessSpec]:
    """The manifest's processes with as many instances as ``choreo up`` last started."""
    return replicate(load_manifest(path), recorded_replicas(var_dir))


def database_urls(
    names: Sequence[str], var_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each service's database as ``start`` places it: ``<NAME>_DATABASE_URL``, else the
    SQLite file ``var_dir/<name>.db`` when it exists (a service that keeps no database, or
    never ran, is left out). The operator commands find outboxes and parked events here."""
    env = os.environ if environ is None else environ
    return {
        name: database_url(name, var_dir, env)
        for name in names
        if env.get(f"{name.upper()}_DATABASE_URL") or (var_dir / f"{name}.db").exists()
    }


def database_url(name: str, var_dir: Path, environ: Mapping[str, str]) -> str:
    """The database ``start`` gives the service ``name``: ``<NAME>_DATABASE_URL``, else the
    SQLite file ``var_dir/<name>.db`` (the service's default, created when it first runs)."""
    key = f"{name.upper().replace('-', '_')}_DATABASE_URL"  # query-2: QUERY_2_DATABASE_URL
    return environ.get(key) or sqlite_url(var_dir / f"{name}.db")


def _paths(var_dir: Path, name: str) -> tuple[Path, Path]:
    return var_dir / "logs" / f"{name}.log", var_dir / "run" / f"{name}.pid"


EXIT_CODES: dict[int, int] = {}  # exit codes of children this process reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; reap it if it is ours.
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if done == 0:
        return True
    EXIT_CODES[pid] = os.waitstatus_to_exitcode(status)
    return False


_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _dying(pid: int) -> bool:
    """Killed but not gone yet: a zombie, or SIGKILL pending (Linux /proc; elsewhere False).
    Such a process may still hold its port, and will not answer as the service."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"]):
        return True
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value.strip() or "0", 16) & _SIGKILL_BIT:
            return True
    return False


def _recorded_pid(var_dir: Path, name: str) -> int | None:
    _, pid_file = _paths(var_dir, name)
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _pid(var_dir: Path, name: str) -> int | None:
    pid = _recorded_pid(var_dir, name)
    if pid is None:
        return None
    return pid if _alive(pid) and not _dying(pid) else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections in TIME_WAIT do not keep the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_old(
    spec: ProcessSpec, old_pid: int | None, deadline_s: float, report: Callable[[str], None]
) -> None:
    """Before a service starts again: its previous process (just killed, say) must be gone
    and its port free, or the new process loses the race and exits during start-up."""
    began = time.monotonic()
    waited: list[str] = []
    while True:
        pid_gone = old_pid is None or not _alive(old_pid)
        port_free = _port_free(spec.port)
        if not pid_gone and f"process {old_pid}" not in waited:
            waited.append(f"process {old_pid}")
        if not port_free and f"port {spec.port}" not in waited:
            waited.append(f"port {spec.port}")
        if pid_gone and port_free:
            break
        if time.monotonic() - began > deadline_s:
            what = " and ".join(waited)
            raise SupervisorError(
                f"{spec.name}: {what} still not free after {deadline_s:.0f}s; is another "
                "process using it?"
            )
        time.sleep(0.05)  # poll interval while the old process exits
    if waited:
        elapsed = time.monotonic() - began
        report(f"{spec.name}: waited {elapsed:.1f}s for {' and '.join(waited)} to be free")


def _ready(spec: ProcessSpec) -> bool:
    """The service answers on its port as itself (not another process holding the port)
    and says it is ready."""
    base = f"http://127.0.0.1:{spec.port}"
    try:
        health = httpx.get(f"{base}/health", timeout=1.0)
        if health.status_code != 200 or health.json().get("service") != spec.service_name:
            return False
        return httpx.get(f"{base}/ready", timeout=1.0).status_code == 200
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def start(
    specs: Sequence[ProcessSpec],
    *,
    var_dir: Path,
    bootstrap: str,
    env: Mapping[str, str] | None = None,
    old_process_wait_s: float = OLD_PROCESS_WAIT_S,
    report: Callable[[str], None] = print,
) -> list[int]:
    """Starts every service not already running; returns the pids. A service whose last
    process is dying (killed a moment ago) is started once that process is gone and its
    port free (up to ``old_process_wait_s``); ``report`` is told what was waited for."""
    pids = []
    for spec in specs:
        existing = _pid(var_dir, spec.name)
        if existing is not None:
            pids.append(existing)
            continue
        _wait_for_old(spec, _recorded_pid(var_dir, spec.name), old_process_wait_s, report)
        log_file, pid_file = _paths(var_dir, spec.name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **(env or {})}
        child_env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            HTTP_PORT=str(spec.port),
            VAR_DIR=str(var_dir),
            DATABASE_URL=child_database(spec, var_dir, child_env),
            PYTHONUNBUFFERED="1",
        )
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        pids.append(proc.pid)
    return pids


def child_database(spec: ProcessSpec, var_dir: Path, env: Mapping[str, str]) -> str:
    """Every instance of a service opens the service's database (empty: the service's
    default); an ``own_database`` service's further instance opens its own, by its name."""
    if spec.own_database and spec.name != spec.service_name:
        return database_url(spec.name, var_dir, env)
    return env.get(f"{spec.service_name.upper()}_DATABASE_URL", "")


def wait_ready(specs: Sequence[ProcessSpec], *, var_dir: Path, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    pending = list(specs)
    while pending:
        for spec in list(pending):
            if _pid(var_dir, spec.name) is None:
                raise SupervisorError(
                    f"{spec.name} exited during start-up: {_last_line(var_dir, spec.name)}"
                )
            if _ready(spec):
                pending.remove(spec)
        if pending and time.monotonic() > end:
            names = ", ".join(s.name for s in pending)
            raise SupervisorError(f"not ready after {deadline_s:.0f}s: {names} (see var/logs)")
        if pending:
            time.sleep(0.2)  # poll interval while services start


def stop(
    specs: Sequence[ProcessSpec], *, var_dir: Path, timeout_s: float = 30, kill: bool = False
) -> list[str]:
    """SIGTERM (or SIGKILL) every running service, wait for exit; returns the stopped names.

    A service that does not stop within ``timeout_s`` of SIGTERM is killed.
    """
    stopped = []
    sig = signal.SIGKILL if kill else signal.SIGTERM
    for spec in specs:
        pid = _pid(var_dir, spec.name)
        if pid is not None:
            os.kill(pid, sig)
            stopped.append(spec.name)
    end = time.monotonic() + timeout_s
    for spec in specs:
        pid = _pid(var_dir, spec.name)
        while pid is not None and _alive(pid):
            if time.monotonic() > end:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # poll interval while the process exits
        _paths(var_dir, spec.name)[1].unlink(missing_ok=True)
    return stopped


def status(specs: Sequence[ProcessSpec], *, var_dir: Path) -> list[ProcessStatus]:
    out = []
    for spec in specs:
        pid = _pid(var_dir, spec.name)
        out.append(
            ProcessStatus(
                spec.name,
                pid,
                pid is not None,
                pid is not None and _ready(spec),
                f"http://127.0.0.1:{spec.port}",
                _paths(var_dir, spec.name)[0],
            )
        )
    return out


def _last_line(var_dir: Path, name: str) -> str:
    log_file, _ = _paths(var_dir, name)
    try:
        lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no log"
    return f"{lines[-1][:300]} (log: {log_file})" if lines else f"empty log {log_file}"
