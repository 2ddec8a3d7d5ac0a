"""The gateway: Debian's nginx, configured by infra.gateway, in front of tiny HTTP upstreams.

The upstreams are plain HTTP servers in this process that answer who they are and what they
were sent, so the test sees which instance nginx picked, what headers reached it and that a
refused request never reached any. Without nginx the tests fail with the install hint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from events.settings import REPO_ROOT
from infra.broker import free_port
from infra.gateway import (
    COMPOSE_PORTS,
    GatewaySettings,
    GatewaySpec,
    compose_config,
    gateway_pid,
    start_gateway,
    stop_gateway,
    write_config,
)
from tests.support import run_module

pytestmark = pytest.mark.no_database


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keepalive from nginx's upstream pool

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        server: _Upstream = self.server  # type: ignore[assignment]
        server.seen.append(len(body))
        if server.dies_mid_request:  # read the request, answer nothing: a crash mid-request
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        padding = "x" * 300_000 if self.path.endswith("/big") else ""  # > nginx's buffers
        payload = json.dumps(
            {
                "padding": padding,
                "instance": server.name,
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "authorization": self.headers.get("Authorization"),
                "forwarded_for": self.headers.get("X-Forwarded-For"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the assertions say what happened


class _Upstream(ThreadingHTTPServer):
    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.name = name
        self.seen: list[int] = []
        self.dies_mid_request = False
        self.connections: set[socket.socket] = set()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self.connections.add(connection)
        return connection, address

    def stop(self) -> None:
        """Like a process that died: the port closed and every open connection with it."""
        self.shutdown()
        self.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def upstreams() -> Iterator[dict[str, _Upstream]]:
    servers = {name: _Upstream(name) for name in ("orders-1", "orders-2", "query-1", "query-2")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def gateway_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "gateway"
    yield home
    stop_gateway(GatewaySpec(home=home, port=0))  # whatever a failed test left running


def _upstream_map(servers: dict[str, _Upstream]) -> dict[str, list[str]]:
    return {
        "orders": [servers["orders-1"].address, servers["orders-2"].address],
        "query": [servers["query-1"].address, servers["query-2"].address],
    }


def test_spreads_load_survives_a_dead_instance_and_refuses_big_bodies(
    upstreams: dict[str, _Upstream], gateway_home: Path
) -> None:
    spec = start_gateway(_upstream_map(upstreams), free_port(), home=gateway_home)
    assert gateway_pid(spec) is not None
    token = {"Authorization": "Bearer some.jwt.token"}
    with httpx.Client(base_url=spec.url, headers=token, timeout=10) as http:
        reads = [http.get("/api/v1/orders/abc").json() for _ in range(10)]
        writes = [http.post("/api/v1/orders", json={"n": i}).json() for i in range(10)]
        cancel = http.post("/api/v1/orders/abc/cancel", json={}).json()
        listing = http.get("/api/v1/orders?limit=5").json()

        # Reads to query, writes to orders, each spread over both instances.
        assert {r["instance"] for r in reads} == {"query-1", "query-2"}
        assert {w["instance"] for w in writes} == {"orders-1", "orders-2"}
        assert cancel["instance"].startswith("orders-")
        assert listing["instance"].startswith("query-") and listing["path"].endswith("limit=5")
        # The bearer token passes through; Host is one the services allow.
        assert {r["authorization"] for r in reads + writes} == {"Bearer some.jwt.token"}
        assert {r["host"] for r in reads + writes} == {"localhost"}
        assert all(r["forwarded_for"] == "127.0.0.1" for r in reads)

        # A body over the services' limit is refused at the gateway, with JSON.
        before = sum(len(u.seen) for u in upstreams.values())
        big = http.post("/api/v1/orders", content=b"x" * (64 * 1024 + 1))
        assert big.status_code == 413
        assert "65536" in big.json()["detail"]
        assert sum(len(u.seen) for u in upstreams.values()) == before

        # A response larger than nginx's memory buffers arrives whole (it spills to the
        # temp path under the gateway's home, which its workers can write).
        large = http.get("/api/v1/customers/big")
        assert large.status_code == 200 and len(large.json()["padding"]) == 300_000

        # An unrouted path: a JSON 404 from the gateway itself.
        unknown = http.get("/api/v1/nothing-here")
        assert unknown.status_code == 404 and "detail" in unknown.json()

        # One instance of each service down: every request is still answered.
        upstreams["orders-2"].stop()
        upstreams["query-1"].stop()
        after_reads = [http.get(f"/api/v1/orders/o{i}") for i in range(10)]
        after_writes = [http.post("/api/v1/orders", json={"n": i}) for i in range(10)]
        assert [r.status_code for r in after_reads + after_writes] == [200] * 20
        assert {r.json()["instance"] for r in after_reads} == {"query-2"}
        assert {r.json()["instance"] for r in after_writes} == {"orders-1"}

    assert stop_gateway(spec)
    assert gateway_pid(spec) is None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{spec.url}/gateway/health", timeout=2)


def test_restarting_with_fewer_instances_drains_one_without_a_new_process(
    upstreams: dict[str, _Upstream], gateway_home: Path
) -> None:
    both = _upstream_map(upstreams)
    spec = start_gateway(both, free_port(), home=gateway_home)
    master = gateway_pid(spec)
    one = {**both, "orders": [upstreams["orders-1"].address]}
    assert start_gateway(one, spec.port, home=gateway_home) == spec  # a reload
    assert gateway_pid(spec) == master
    before = len(upstreams["orders-2"].seen)
    with httpx.Client(base_url=spec.url, timeout=10) as http:
        writes = [http.post("/api/v1/orders", json={"n": i}) for i in range(6)]
    assert {w.json()["instance"] for w in writes} == {"orders-1"}
    assert len(upstreams["orders-2"].seen) == before  # drained: nothing reached it
    assert stop_gateway(spec)


def test_rate_limit_per_client_answers_429_with_json(
    upstreams: dict[str, _Upstream], gateway_home: Path
) -> None:
    tight = GatewaySettings(rate_per_s=1, burst=2)
    spec = start_gateway(_upstream_map(upstreams), free_port(), home=gateway_home, settings=tight)
    with httpx.Client(base_url=spec.url, timeout=10) as http:
        codes = [http.get("/api/v1/orders/x") for _ in range(10)]
    refused = [r for r in codes if r.status_code == 429]
    assert refused, [r.status_code for r in codes]
    assert "too many requests" in refused[0].json()["detail"]
    assert stop_gateway(spec)


def test_every_service_routes_and_the_config_passes_nginx_check(tmp_path: Path) -> None:
    spec = GatewaySpec(home=tmp_path / "gw", port=free_port())
    everyone = {name: [f"127.0.0.1:{port}", "127.0.0.1:1"] for name, port in COMPOSE_PORTS.items()}
    text = write_config(spec, everyone).read_text()  # raises with nginx's message if invalid
    for prefix in ("/api/v1/stock/", "/api/v1/accounts/", "/api/v1/shipments/", "/dashboard"):
        assert f"location {prefix} " in text


def test_a_request_that_reached_a_crashing_instance_is_retried_only_if_idempotent(
    upstreams: dict[str, _Upstream], gateway_home: Path
) -> None:
    spec = start_gateway(_upstream_map(upstreams), free_port(), home=gateway_home)
    upstreams["orders-1"].dies_mid_request = True
    upstreams["query-1"].dies_mid_request = True
    with httpx.Client(base_url=spec.url, timeout=10) as http:
        reads = [http.get(f"/api/v1/orders/r{i}") for i in range(6)]
        writes = [http.post("/api/v1/orders", json={"n": i}) for i in range(6)]
    # A GET goes to the other instance; a POST the crashing one read is never sent twice
    # (it might have placed the order): the client gets a JSON 502 and retries itself.
    assert [r.status_code for r in reads] == [200] * 6
    assert {r.json()["instance"] for r in reads} == {"query-2"}
    failed = [w for w in writes if w.status_code == 502]
    assert failed and "no instance" in failed[0].json()["detail"]
    assert [w.status_code for w in writes if w not in failed] == [200] * (6 - len(failed))
    posts_seen = len(upstreams["orders-1"].seen) + len(upstreams["orders-2"].seen)
    assert posts_seen == 6  # each POST reached exactly one instance
    assert stop_gateway(spec)


def test_compose_runs_the_rendered_configuration_for_the_manifest_ports() -> None:
    manifest = yaml.safe_load((REPO_ROOT / "services" / "manifest.yaml").read_text())
    ports = {name: entry["port"] for name, entry in manifest["services"].items()}
    assert {name: ports[name] for name in COMPOSE_PORTS} == COMPOSE_PORTS
    committed = (REPO_ROOT / "infra" / "gateway" / "compose.conf").read_text()
    assert committed == compose_config(), "re-render: python -m infra.gateway > compose.conf"
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    gateway = compose["gateway"]
    assert gateway["build"] == "infra/gateway" and gateway["ports"] == ["127.0.0.1:8100:8100"]
    assert set(gateway["depends_on"]) == set(COMPOSE_PORTS)
    dockerfile = (REPO_ROOT / "infra" / "gateway" / "Dockerfile").read_text()
    assert "COPY compose.conf /etc/choreo/gateway.conf" in dockerfile
    assert "listen 8100;" in committed


# Every route the services declare: (file, prefix the app mounts it under). Analytics' own
# page is reached through query's proxy, so analytics has no upstream at the gateway.
_ROUTE_FILES = [(f"services/{name}/api.py", "/api/v1") for name in COMPOSE_PORTS] + [
    ("services/query/dashboard.py", ""),
    ("services/query/analytics_proxy.py", "/api/v1"),
]
_DECORATOR = re.compile(r'@router\.(get|post|put|patch|delete)\(\s*"([^"]+)"', re.S)


def _declared_routes() -> list[tuple[str, str, str]]:
    """(method, path with sample values, service that declares it) for every route."""
    routes = []
    for file, prefix in _ROUTE_FILES:
        owner = file.split("/")[1]
        for method, path in _DECORATOR.findall((REPO_ROOT / file).read_text()):
            routes.append((method.upper(), prefix + re.sub(r"\{[^}]+\}", "x1", path), owner))
    return routes


def test_every_declared_route_reaches_its_service_through_nginx(gateway_home: Path) -> None:
    routes = _declared_routes()
    assert len(routes) > 20, routes  # the pattern still finds the services' decorators
    servers = {name: _Upstream(name) for name in COMPOSE_PORTS}
    try:
        spec = start_gateway(
            {name: [s.address] for name, s in servers.items()}, free_port(), home=gateway_home
        )
        # Reads of a path query serves too go to query (the read side); the rest to the owner.
        query_reads = {path for method, path, owner in routes if owner == "query"}
        with httpx.Client(base_url=spec.url, timeout=10) as http:
            for method, path, owner in routes:
                expected = "query" if method == "GET" and path in query_reads else owner
                answer = http.request(method, path, json={} if method != "GET" else None)
                assert answer.status_code == 200, (method, path, answer.text)
                assert answer.json()["instance"] == expected, (method, path)
        assert stop_gateway(spec)
    finally:
        for server in servers.values():
            server.stop()


def test_choreo_down_stops_the_gateway_choreo_up_started(
    upstreams: dict[str, _Upstream], tmp_path: Path
) -> None:
    var = tmp_path / "var"
    spec = start_gateway(_upstream_map(upstreams), free_port(), home=var / "gateway")
    assert gateway_pid(spec) is not None
    env = {**os.environ, "VAR_DIR": str(var)}
    done = run_module("services.tools.stack", "down", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "gateway stopped" in done.stdout
    assert gateway_pid(spec) is None
