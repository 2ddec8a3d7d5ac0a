"""``choreo status`` sees every instance ``choreo up --replicas N`` started, not only each
service's first port: two real query instances (each its own read model, so SQLite serves)
are two rows, both ready; the second stopped is a row that is down and exit status 3."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.cli.main import main
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.supervisor import (
    REPLICA_PORT_STEP,
    ProcessSpec,
    record_replicas,
    replicate,
    stop,
)
from events.topics import apply_topics
from infra.broker import free_port
from services.tools.startup import start_services
from tests.support import unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]


def _port_with_a_free_second() -> int:
    """A free port whose second instance's port (port + 100) is free too."""
    for _ in range(50):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", port + REPLICA_PORT_STEP))
            return port
    raise AssertionError("no free port pair")


async def test_status_has_a_row_per_instance_and_a_stopped_one_is_down(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    prefix = unique("status") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    var_dir = tmp_path / "var"
    query = ProcessSpec("query", "services.query", _port_with_a_free_second(), own_database=True)
    monkeypatch.setattr("events.cli.status.load_manifest", lambda: [query])
    for name in ("QUERY_DATABASE_URL", "QUERY_2_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)  # each instance its own SQLite read model
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    monkeypatch.setenv("VAR_DIR", str(var_dir))
    plan = replicate([query], 2)
    assert [s.name for s in plan] == ["query", "query-2"]
    try:
        # As `choreo up --replicas 2` does: the instances, then the count it started.
        await asyncio.to_thread(
            start_services,
            plan,
            PlatformSettings(var_dir=var_dir),
            KafkaConnection(kafka_bootstrap),
            120,
            {"TOPIC_PREFIX": prefix},
        )
        record_replicas(var_dir, 2)
        capsys.readouterr()

        assert await asyncio.to_thread(main, ["status", "--output", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        rows = [
            (r["service"], r["instance"], r["port"], r["up"], r["ready"]) for r in doc["services"]
        ]
        assert rows == [
            ("query", "query", query.port, True, True),
            ("query", "query-2", query.port + REPLICA_PORT_STEP, True, True),
        ]
        assert doc["kafka"] == "reachable"

        stop(plan[1:], var_dir=var_dir)
        assert await asyncio.to_thread(main, ["status", "--output", "json"]) == 3
        doc = json.loads(capsys.readouterr().out)
        assert [(r["instance"], r["up"]) for r in doc["services"]] == [
            ("query", True),
            ("query-2", False),
        ]
        assert await asyncio.to_thread(main, ["status"]) == 3
        lines = capsys.readouterr().out.splitlines()
        (second,) = [line for line in lines if line.startswith("query-2 ")]
        assert f" {query.port + REPLICA_PORT_STEP} " in second and " down " in second
    finally:
        stop(plan, var_dir=var_dir)
