"""The order saga end to end on the secured broker (SASL_SSL, SCRAM-SHA-512, the catalogue's
least-privilege ACLs): every path ends as expected and the invariants hold with each service
connecting as its own principal - the configuration ``choreo up --secure`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.supervisor import status as supervisor_status
from services.saga_check import World
from services.tools.demo import EXPECTED, drive, outcome
from tests.e2e.conftest import Stack
from tests.e2e.test_saga import settle

pytestmark = pytest.mark.e2e


def _kafka_settings(pid: int) -> dict[str, str]:
    """The KAFKA_* variables a running service process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs if k.startswith("KAFKA_") and "PASSWORD" not in k}


async def test_every_path_ends_as_expected_on_the_secured_broker(secure_stack: Stack):
    for row in supervisor_status(secure_stack.specs, var_dir=secure_stack.var_dir):
        if row.pid is not None:  # the ones started (analytics starts on demand)
            settings = _kafka_settings(row.pid)
            assert settings["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            assert settings["KAFKA_SASL_USERNAME"] == row.name  # its own, not admin's

    world = World()
    await drive(world, secure_stack.codec, secure_stack.kafka, secure_stack.api, per_path=2)
    rows = await settle(world, secure_stack)
    seen: dict[str, set[str]] = {}
    for oid, path in world.orders.items():
        seen.setdefault(path, set()).add(outcome(rows[oid]))
        assert outcome(rows[oid]) in EXPECTED[path], (path, rows[oid])
    assert set(seen) == set(EXPECTED)
