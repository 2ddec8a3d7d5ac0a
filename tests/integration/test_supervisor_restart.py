"""`choreo up` right after a service was killed starts it again (issue 14, defect 6): the
supervisor waits for the killed process to be gone and its port free, says so, and the new
process becomes ready, instead of reporting that it "exited during start-up".

Real processes: the notifications service (the lightest) against the session's broker, as
a child of this test (killed and reaped here) and as an orphan (started by another
process that has exited, as a previous `choreo up` leaves it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.kafka import KafkaConnection
from events.supervisor import ProcessSpec, SupervisorError, start, stop, wait_ready
from events.topics import apply_topics
from infra.broker import free_ports
from tests.support import unique

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def notifications(
    kafka_bootstrap: str, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[tuple[ProcessSpec, Path, dict[str, str]]]:
    prefix = unique("restart") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    (port,) = free_ports(1)
    spec = ProcessSpec("notifications", "services.notifications", port)
    env = {"TOPIC_PREFIX": prefix, "NOTIFICATIONS_DATABASE_URL": database_url("notifications")}
    var_dir = tmp_path / "var"
    try:
        yield spec, var_dir, env
    finally:
        stop([spec], var_dir=var_dir, kill=True)


def _start_elsewhere(spec: ProcessSpec, var_dir: Path, bootstrap: str, env: dict[str, str]) -> int:
    """Starts the service from another Python process that then exits: the service is
    nobody's child here, as after an earlier `choreo up`."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from events.supervisor import ProcessSpec, start\n"
        "a = json.loads(sys.argv[1])\n"
        "print(start([ProcessSpec(*a['spec'])], var_dir=Path(a['var']),"
        " bootstrap=a['bootstrap'], env=a['env'])[0])\n"
    )
    arg = json.dumps(
        {
            "spec": [spec.name, spec.module, spec.port],
            "var": str(var_dir),
            "bootstrap": bootstrap,
            "env": env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script, arg],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("parent", ["this test", "a process that exited"])
def test_a_service_killed_with_sigkill_starts_again_at_once(
    notifications: tuple[ProcessSpec, Path, dict[str, str]], kafka_bootstrap: str, parent: str
) -> None:
    spec, var_dir, env = notifications
    if parent == "this test":
        (old,) = start([spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env)
    else:
        old = _start_elsewhere(spec, var_dir, kafka_bootstrap, env)
    wait_ready([spec], var_dir=var_dir, deadline_s=90)

    said: list[str] = []
    os.kill(old, signal.SIGKILL)
    (new,) = start([spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env, report=said.append)
    wait_ready([spec], var_dir=var_dir, deadline_s=90)  # no "exited during start-up"

    assert new != old
    # Whether anything was still there to wait for depends on how fast the kernel was.
    assert all(line.startswith("notifications: waited") for line in said), said


def test_start_waits_for_the_port_and_says_so(
    notifications: tuple[ProcessSpec, Path, dict[str, str]], kafka_bootstrap: str
) -> None:
    spec, var_dir, env = notifications
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", spec.port))
    holder.listen()  # as the killed process's server socket would
    release = threading.Timer(0.5, holder.close)  # the old process finishing its exit
    release.start()
    said: list[str] = []
    try:
        start([spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env, report=said.append)
    finally:
        release.join()
    wait_ready([spec], var_dir=var_dir, deadline_s=90)
    assert len(said) == 1 and "waited" in said[0] and f"port {spec.port}" in said[0], said


def test_a_port_that_stays_taken_is_one_line_naming_it(
    notifications: tuple[ProcessSpec, Path, dict[str, str]], kafka_bootstrap: str
) -> None:
    spec, var_dir, env = notifications
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", spec.port))
        holder.listen()
        with pytest.raises(SupervisorError, match=f"port {spec.port} still not free"):
            start(
                [spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env, old_process_wait_s=0.3
            )
    assert not (var_dir / "run" / "notifications.pid").exists()  # nothing was started
