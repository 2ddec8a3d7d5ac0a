"""Process checks shared by the local broker, the cluster and the gateway: each starts a
plain process, keeps its pid in a file and must tell a live one from a dead or zombie one."""

from __future__ import annotations

import contextlib
import os
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
