"""Process checks shared by the local broker, the cluster, the schema registry and the gateway:
each starts a plain process, keeps its pid in a file and its log beside it, must tell a live
one from a dead or zombie one, and stops it with SIGTERM, then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from pathlib import Path

POLL_S = 0.1


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: our own exited child is reaped (False), and a zombie that no
    init reaps (a daemon's master is nobody's child here) counts as gone."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def wait_for_exit(pid: int, deadline: float) -> bool:
    """Polls until ``pid`` is gone (True) or ``deadline`` (``time.monotonic``) passes."""
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; False if ``pid`` outlived even that."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, time.monotonic() + timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_for_exit(pid, time.monotonic() + 10.0)


def read_text(path: Path) -> str | None:
    """A small file's stripped text (a pid, a digest), None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int) -> str:
    """A log's text after ``offset`` (all of it if the file was replaced meanwhile)."""
    try:
        with path.open("rb") as handle:
            if offset <= path.stat().st_size:
                handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def maven_error(output: str) -> str | None:
    """Maven's first ``[ERROR]`` line names the cause; the ones after it are help links."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():  # Debian's mvn colours
        message = line.removeprefix("[ERROR]").strip()
        if line.startswith("[ERROR]") and message:
            return message
    return None
