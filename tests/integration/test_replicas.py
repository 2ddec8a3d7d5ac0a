"""Two instances of one saga service as `choreo up --replicas 2` starts them: one database
(PostgreSQL), one consumer group, distinct HTTP ports, both ready, the topic's partitions
shared between them rather than each reading all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from events.catalogue import Catalogue
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.supervisor import ProcessSpec, status, stop
from events.topics import apply_topics
from infra.broker import free_ports
from services.notifications.app import SERVICE
from services.tools.startup import start_services
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_two_instances_share_the_group_and_the_database_and_are_both_ready(
    kafka_bootstrap: str, tmp_path: Path, db_backend: str, database_url: Callable[[str], str]
) -> None:
    if db_backend != "postgres":
        pytest.skip("instances share one database: PostgreSQL (CHOREO_TEST_DB=postgres)")
    prefix = unique("replicas") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    first, second = free_ports(2)
    specs = [
        ProcessSpec("notifications", "services.notifications", first),
        ProcessSpec("notifications-2", "services.notifications", second, service="notifications"),
    ]
    env = {"TOPIC_PREFIX": prefix, "NOTIFICATIONS_DATABASE_URL": database_url("notifications")}
    var_dir = tmp_path / "var"
    try:
        # As `choreo up --replicas 2` starts them (the first, ready, then the second).
        settings = PlatformSettings(var_dir=var_dir)
        start_services(specs, settings, KafkaConnection(kafka_bootstrap), 90, env=env)
        partitions = sum(catalogue.topics[prefix + t].partitions for t in SERVICE.topics)

        async def shared_out() -> list[int] | None:
            # One group: the partitions are shared out (each reading all would hold 2x).
            held = []
            async with httpx.AsyncClient(timeout=5) as http:
                for spec in specs:
                    r = await http.get(f"http://127.0.0.1:{spec.port}/ready")
                    body = r.json()
                    assert body["checks"]["consumer"] is True, body
                    if r.status_code != 200:
                        return None
                    held.append(body["checks"]["partitions"])
            return held if sum(held) == partitions else None

        held = await eventually(shared_out, deadline_s=30, what="the partitions shared out")
        assert len(held) == 2 and max(held) < partitions, held
        rows = status(specs, var_dir=var_dir)
        assert [(r.name, r.ready) for r in rows] == [
            ("notifications", True),
            ("notifications-2", True),
        ]
        assert len({r.pid for r in rows}) == 2
        assert (var_dir / "logs" / "notifications-2.log").exists()
    finally:
        stop(specs, var_dir=var_dir)
