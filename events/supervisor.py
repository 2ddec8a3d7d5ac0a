"""Starting and stopping service processes for local use (`choreo up` / `choreo down`).

Each service is a separate OS process with its log in ``var/logs/<name>.log`` and its pid in
``var/run/<name>.pid``. The list of services comes from a manifest file, so the platform
never imports a service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from events.settings import REPO_ROOT

MANIFEST = REPO_ROOT / "services" / "manifest.yaml"


class SupervisorError(Exception):
    """A service would not start or stop; the message is one line."""


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str
    port: int


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
        ProcessSpec(name, str(body["module"]), int(body["port"]))
        for name, body in (doc.get("services") or {}).items()
    ]


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


def _pid(var_dir: Path, name: str) -> int | None:
    _, pid_file = _paths(var_dir, name)
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _ready(spec: ProcessSpec) -> bool:
    """The service answers on its port as itself (not another process holding the port)
    and says it is ready."""
    base = f"http://127.0.0.1:{spec.port}"
    try:
        health = httpx.get(f"{base}/health", timeout=1.0)
        if health.status_code != 200 or health.json().get("service") != spec.name:
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
) -> list[int]:
    """Starts every service not already running; returns the pids."""
    pids = []
    for spec in specs:
        existing = _pid(var_dir, spec.name)
        if existing is not None:
            pids.append(existing)
            continue
        log_file, pid_file = _paths(var_dir, spec.name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **(env or {})}
        child_env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            HTTP_PORT=str(spec.port),
            VAR_DIR=str(var_dir),
            DATABASE_URL=child_env.get(f"{spec.name.upper()}_DATABASE_URL", ""),
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
