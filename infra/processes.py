"""What the local broker, the cluster, the schema registry and the gateway share: each starts
a plain process, keeps its pid in a file and its log beside it under a home of its own, must
tell a live one from a dead or zombie one, and stops it with SIGTERM, then SIGKILL. The JVM
ones (broker, registry) also share how their home is laid out (:class:`LocalHome`), the tools
they need (java, mvn) and fetching their jars with Maven once per pom (:func:`maven_fetch`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from infra.locks import exclusive

_T = TypeVar("_T")

POLL_S = 0.1
HOST = "127.0.0.1"
INSTALL_HINT = {
    "java": "install a JDK 17+ (`make jdk` does, from Debian's default-jdk-headless)",
    "mvn": "install Maven 3 (Debian: apt-get install maven)",
}
_MARKER = ".complete"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    (port,) = free_ports(1)
    return port


def free_ports(n: int) -> list[int]:
    """``n`` distinct such ports. Asked for one at a time, the kernel may hand out a port
    it just handed out (nothing holds it yet): here every socket stays bound until all
    ports are chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class LocalHome:
    """A local process's home: everything it owns (pid file, logs, data) lives under it, so
    several run side by side. Subclasses name their pid and log files."""

    pid_name: ClassVar[str]
    log_name: ClassVar[str]

    home: Path

    def __post_init__(self) -> None:
        # The pid check compares command lines, so the home must be spelled one way.
        object.__setattr__(self, "home", Path(self.home).absolute())

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / self.log_name

    @property
    def pid_file(self) -> Path:
        return self.home / self.pid_name


def which(tool: str, error: type[Exception]) -> str:
    """``tool``'s path, else ``error`` saying what to install."""
    found = shutil.which(tool)
    if found is None:
        raise error(f"{tool} not found on PATH: {INSTALL_HINT[tool]}")
    return found


def owned_pid(pid_file: Path, *markers: bytes) -> int | None:
    """The pid from ``pid_file`` if that process is alive and (Linux, against a recycled pid)
    its command line holds every one of ``markers`` as an argument."""
    text = read_text(pid_file)
    if not text or not text.isdigit():
        return None
    pid = int(text)
    if not alive(pid):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        args = cmdline.read_bytes().split(b"\0")
        if not all(marker in args for marker in markers):
            return None
    return pid


def stop(spec: LocalHome, pid: int | None, timeout: float, error: type[Exception]) -> bool:
    """Stops ``spec``'s process ``pid`` (SIGTERM, SIGKILL after ``timeout``) and forgets its
    pid file; whether one was running. ``error`` when it outlives even SIGKILL."""
    if pid is None:
        spec.pid_file.unlink(missing_ok=True)
        return False
    if not terminate(pid, timeout):
        raise error(f"pid {pid} of {spec.home} survived SIGKILL; see {spec.log_file}")
    spec.pid_file.unlink(missing_ok=True)
    return True


def start(command: list[str], output: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """``command`` in a session of its own (a terminal's Ctrl-C does not reach it), its
    stdout and stderr appended to ``output``."""
    with output.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


Started = Literal["ready", "exited", "late"]


def wait_for_start(
    pid: int,
    process: subprocess.Popen[bytes] | None,
    deadline: float,
    ready: Callable[[float], bool],
    poll_s: float = 0.2,
) -> Started:
    """Polls a starting process (``process`` when this one started it, else by ``pid``) until
    ``ready(seconds left)`` says so, it exits, or ``deadline`` (``time.monotonic``) passes."""
    while True:
        exited = process.poll() is not None if process is not None else not alive(pid)
        if exited:
            return "exited"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "late"
        if ready(remaining):
            return "ready"
        time.sleep(poll_s)


def maven_fetch(
    pom: Path,
    target: Path,
    goal: list[str],
    error: type[Exception],
    what: str,
    complete: Callable[[], bool] = lambda: True,
) -> None:
    """Runs Maven's ``goal`` on ``pom`` to fill ``target``, unless ``target`` holds a
    complete earlier run of the same pom. A marker file (the pom's digest) is written only
    after a complete run, so an interrupted one, or a changed pom, is redone from scratch;
    a lock beside ``target`` keeps two processes from running it at once."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = target / _MARKER
    if read_text(marker) == digest:
        return
    mvn = which("mvn", error)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock"):
        if read_text(marker) == digest:  # another process fetched it meanwhile
            return
        shutil.rmtree(target, ignore_errors=True)
        command = [mvn, "-B", "-q", "-f", str(pom), *goal]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not complete():
            output = done.stdout + done.stderr
            raise error(f"{what} with Maven failed: {maven_error(output) or last_error(output)}")
        marker.write_text(digest)


def run_async(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` that also works when the caller is inside a running event loop (the
    lifecycles are synchronous; tests call them from async fixtures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


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


_NOISE = (
    "at ",  # stack frames
    "...",
    "Error: Could not create the Java Virtual Machine",
    "Error: A fatal exception has occurred",
)


def last_error(output: str) -> str:
    """A JVM's most telling line: the last ERROR/FATAL line joined with the exception
    message under it, else the last exception line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_NOISE)]
    for index in range(len(lines) - 1, -1, -1):
        if re.search(r"\b(ERROR|FATAL)\b", lines[index]):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if re.match(r"^[\w.$]+(Exception|Error)\b", following):
                return f"{lines[index]}: {following}"
            return lines[index]
    for line in reversed(lines):
        if re.search(r"(Exception|Error)\b", line):
            return line
    return lines[-1] if lines else "no output"
