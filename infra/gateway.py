"""The API gateway: Debian's nginx on one port in front of every service instance.

A real reverse proxy, not a hand-written one: nginx spreads requests over each service's
instances (round robin), takes an instance out for ``fail_timeout`` after ``max_fails`` failed
attempts (passive health checks), retries another instance for requests nothing of which
reached the first, refuses bodies over the services' own limit (413) and rate-limits per
client address (429), all with JSON bodies like the services'. The configuration is rendered
from ``infra/gateway/nginx.conf.template`` and :data:`ROUTES` (which service answers which
path, written from every ``services/*/api.py`` router), for the instances running:

    spec = start_gateway({"orders": ["127.0.0.1:8101"], "query": [...]}, port=8100)
    stop_gateway(spec)

nginx runs as a plain process (a daemon with a pid file, like the broker in
:mod:`infra.broker`), unprivileged: its prefix, pid file, logs and temp paths live under its
home (``<repo>/var/gateway``). Compose runs the same template, rendered for its containers
(:func:`compose_config`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.processes import alive

__all__ = [
    "ROUTES",
    "GatewayError",
    "GatewaySettings",
    "GatewaySpec",
    "Route",
    "compose_config",
    "default_spec",
    "gateway_pid",
    "render",
    "start_gateway",
    "stop_gateway",
]

_TEMPLATE = Path(__file__).with_name("gateway") / "nginx.conf.template"
INSTALL_HINT = "nginx not found: `make gateway` installs it (Debian: apt-get install nginx)"
_POLL_S = 0.1
# The manifest's ports (services/manifest.yaml), for compose where every service is one
# container named after it; infra never imports services, so the test keeps them in step.
COMPOSE_PORTS = {
    "orders": 8101,
    "inventory": 8102,
    "payments": 8103,
    "shipping": 8104,
    "notifications": 8105,
    "query": 8106,
}


class GatewayError(Exception):
    """The gateway could not be configured, started or stopped; the message says why."""


@dataclass(frozen=True)
class Route:
    """nginx ``location`` ``match`` (``= /exact``, ``/prefix/`` or ``~ regex``) -> service."""

    match: str
    service: str


# Reads go to the query service, writes to the service that owns them. /api/v1/orders itself
# is split by method in the template (POST: orders; GET: query).
ROUTES: tuple[Route, ...] = (
    Route(r"~ ^/api/v1/orders/[^/]+/cancel$", "orders"),
    Route("= /api/v1/orders-summary", "orders"),
    Route("/api/v1/prices/", "orders"),
    Route("/api/v1/orders/", "query"),
    Route("/api/v1/customers/", "query"),
    Route("/api/v1/skus/", "query"),
    Route("= /api/v1/stats", "query"),
    Route("= /api/v1/projections", "query"),
    Route("= /api/v1/analytics", "query"),  # query's proxy of the analytics service
    Route("= /", "query"),
    Route("/dashboard", "query"),
    Route("/api/v1/stock/", "inventory"),
    Route("/api/v1/reservations/", "inventory"),
    Route("/api/v1/accounts/", "payments"),
    Route("/api/v1/payments/", "payments"),
    Route("/api/v1/shipments/", "shipping"),
    Route("/api/v1/notifications/", "notifications"),
)


@dataclass(frozen=True)
class GatewaySettings:
    """What the rendered configuration enforces; the defaults match the services' own."""

    max_body_bytes: int = 64 * 1024  # events.http_input.MAX_BODY_BYTES (HTTP_MAX_BODY_BYTES)
    # Per client address: far above one user's needs, below what starves the other clients.
    rate_per_s: int = 500
    burst: int = 1000
    max_fails: int = 2
    fail_timeout_s: int = 5
    connect_timeout_s: int = 2
    read_timeout_s: int = 30
    next_upstream_tries: int = 3
    # Seconds a client's idle connection is kept; 0: a connection per request, so that a
    # reload (draining an instance) never closes one a request is being sent on.
    client_keepalive_s: int = 0
    upstream_host: str = "localhost"  # one of the services' default ALLOWED_HOSTS


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway: its home directory (everything nginx writes) and where it listens."""

    home: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def config_file(self) -> Path:
        return self.home / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.home / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.home / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.home / "logs" / "access.log"

    @property
    def temp_dir(self) -> Path:
        return self.home / "temp"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def default_spec(port: int = 8100, root: Path | None = None) -> GatewaySpec:
    """The gateway of ``choreo up``: ``<repo>/var/gateway`` on 127.0.0.1:``port``."""
    base = root if root is not None else Path(__file__).resolve().parent.parent
    return GatewaySpec(home=base / "var" / "gateway", port=port)


class _Template(string.Template):
    delimiter = "%"  # nginx uses $ for its own variables


def render(
    upstreams: Mapping[str, Sequence[str]],
    *,
    listen: str,
    pid_file: str,
    error_log: str,
    access_log: str,
    temp_dir: str,
    settings: GatewaySettings = GatewaySettings(),
    daemon: bool = True,
) -> str:
    """The nginx configuration for ``upstreams`` (service -> ``host:port`` of each instance).

    Routes of services without instances are left out (a 404 at the gateway), so a partial
    stack still passes ``nginx -t``.
    """
    for service, servers in upstreams.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", service):
            raise GatewayError(f"service name {service!r}: lower-case letters, digits, _ only")
        if not servers:
            raise GatewayError(f"service {service}: no instance to route to")
        for server in servers:
            if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", server):
                raise GatewayError(f"service {service}: {server!r} is not host:port")
    s = settings
    blocks = []
    for service, servers in upstreams.items():
        lines = [f"    upstream {service} {{"]
        lines += [
            f"        server {server} max_fails={s.max_fails} fail_timeout={s.fail_timeout_s}s;"
            for server in servers
        ]
        lines += ["    }"]
        blocks.append("\n".join(lines))
    locations = []
    present = [name for name in ("orders", "query") if name in upstreams]
    if present:
        locations.append(_location("= /api/v1/orders", "$orders_collection"))
    locations += [_location(r.match, r.service) for r in ROUTES if r.service in upstreams]
    writes = "orders" if "orders" in upstreams else (present or ["orders"])[0]
    reads = "query" if "query" in upstreams else (present or ["query"])[0]
    return _Template(_TEMPLATE.read_text()).substitute(
        daemon="on" if daemon else "off",
        pid_file=pid_file,
        error_log=error_log,
        access_log=access_log,
        temp_dir=temp_dir,
        listen=listen,
        max_body_bytes=s.max_body_bytes,
        rate_per_s=s.rate_per_s,
        burst=s.burst,
        orders_writes=writes,
        orders_reads=reads,
        upstreams="\n".join(blocks) + "\n",
        upstream_host=s.upstream_host,
        connect_timeout_s=s.connect_timeout_s,
        read_timeout_s=s.read_timeout_s,
        next_upstream_tries=s.next_upstream_tries,
        client_keepalive_s=s.client_keepalive_s,
        locations="\n".join(locations),
    )


def _location(match: str, upstream: str) -> str:
    return f"        location {match} {{\n            proxy_pass http://{upstream};\n        }}"


def compose_config(settings: GatewaySettings = GatewaySettings()) -> str:
    """The configuration compose's gateway container runs (infra/gateway/compose.conf):
    one instance per service, by container name, nginx in the foreground."""
    return render(
        {name: [f"{name}:{port}"] for name, port in COMPOSE_PORTS.items()},
        listen="8100",
        pid_file="/tmp/nginx.pid",
        error_log="stderr",
        access_log="/dev/stdout",
        temp_dir="/tmp",
        settings=settings,
        daemon=False,
    )


def nginx_binary() -> str:
    """The nginx executable (PATH, then Debian's /usr/sbin), or GatewayError with the hint."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise GatewayError(INSTALL_HINT)
    return found


def write_config(
    spec: GatewaySpec,
    upstreams: Mapping[str, Sequence[str]],
    settings: GatewaySettings = GatewaySettings(),
) -> Path:
    """Renders the configuration into ``spec.home`` and has nginx check it (``nginx -t``)."""
    for directory in (spec.home, spec.error_log.parent, spec.temp_dir):
        directory.mkdir(parents=True, exist_ok=True)
    text = render(
        upstreams,
        listen=f"{spec.host}:{spec.port}",
        pid_file=str(spec.pid_file),
        error_log=str(spec.error_log),
        access_log=str(spec.access_log),
        temp_dir=str(spec.temp_dir),
        settings=settings,
    )
    candidate = spec.config_file.with_suffix(".conf.new")
    candidate.write_text(text)
    _nginx(spec, candidate, "-t", "-q")
    candidate.replace(spec.config_file)
    return spec.config_file


def start_gateway(
    upstreams: Mapping[str, Sequence[str]],
    port: int,
    home: Path | None = None,
    settings: GatewaySettings = GatewaySettings(),
    timeout: float = 10.0,
) -> GatewaySpec:
    """Starts nginx on 127.0.0.1:``port`` in front of ``upstreams`` (service -> instances'
    ``host:port``); returns once the port answers.

    On a running gateway it reloads the new configuration and returns once every request
    started under the old one has finished: called without an instance, it drains that
    instance (nothing is sent to it afterwards), which may then stop without failing one."""
    spec = default_spec(port) if home is None else GatewaySpec(home=home, port=port)
    write_config(spec, upstreams, settings)
    pid = gateway_pid(spec)
    if pid is not None:
        _reload(pid, timeout)
        return spec
    _nginx(spec, spec.config_file)  # daemon on: returns once the master has forked
    deadline = time.monotonic() + timeout
    while not _answers(spec):
        if time.monotonic() >= deadline:
            raise GatewayError(f"gateway on port {port} did not answer: see {spec.error_log}")
        time.sleep(_POLL_S)
    return spec


def stop_gateway(spec: GatewaySpec, timeout: float = 10.0) -> bool:
    """Graceful stop (SIGQUIT: requests in flight finish), SIGKILL after ``timeout``.
    False when no gateway was running."""
    pid = gateway_pid(spec)
    if pid is None:
        return False
    os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            break
        time.sleep(_POLL_S)
    return True


def gateway_pid(spec: GatewaySpec) -> int | None:
    """The master's pid from the pid file, if that process is alive and runs this config."""
    try:
        text = spec.pid_file.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not alive(int(text)):
        return None
    cmdline = Path(f"/proc/{text}/cmdline")
    # Linux: guard against a recycled pid (nginx rewrites its title but keeps the arguments)
    if cmdline.exists() and str(spec.config_file).encode() not in cmdline.read_bytes():
        return None
    return int(text)


def _nginx(spec: GatewaySpec, config: Path, *args: str) -> None:
    command = [nginx_binary(), "-p", f"{spec.home}/", "-c", str(config), "-e", "stderr", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, start_new_session=True
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if "test failed" in reason and len(lines) > 1:
            reason = lines[-2]
        raise GatewayError(f"nginx ({config}): {reason}")


def _reload(master: int, timeout: float) -> None:
    """SIGHUP: nginx starts workers with the new configuration, and the old ones exit once
    their requests are answered; waits for that."""
    old_workers = _workers(master)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in old_workers):
        if time.monotonic() >= deadline:
            raise GatewayError(f"gateway reload: old workers still answering after {timeout}s")
        time.sleep(_POLL_S)


def _workers(master: int) -> set[int]:
    try:  # Linux: the master's children are its workers
        return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except OSError:
        return set()


def _answers(spec: GatewaySpec) -> bool:
    try:
        with socket.create_connection((spec.host, spec.port), timeout=1.0):
            return True
    except OSError:
        return False


if __name__ == "__main__":  # re-renders compose's copy: python -m infra.gateway > compose.conf
    print(compose_config(), end="")
