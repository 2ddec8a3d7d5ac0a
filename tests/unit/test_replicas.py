"""`choreo up --replicas N`: the instances and ports planned from the manifest, the databases
they open, and the refusal of a replicated service on SQLite (one line, exit 2, nothing
started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.db import sqlite_url
from events.supervisor import (
    ProcessSpec,
    SupervisorError,
    child_database,
    load_manifest,
    record_replicas,
    replicate,
    running_plan,
    shared_sqlite,
    upstreams,
)
from services.tools.stack import main

SAGA = ["orders", "inventory", "payments", "shipping", "notifications"]
POSTGRES = "postgresql+asyncpg://choreo@127.0.0.1/{}"


def test_one_replica_is_the_manifest_as_it_is() -> None:
    assert replicate(load_manifest(), 1) == load_manifest()


def test_three_replicas_of_each_saga_service_and_query_on_distinct_ports() -> None:
    plan = replicate(load_manifest(), 3)
    by_service: dict[str, list[ProcessSpec]] = {}
    for spec in plan:
        by_service.setdefault(spec.service_name, []).append(spec)
    for name in [*SAGA, "query"]:
        assert [s.name for s in by_service[name]] == [name, f"{name}-2", f"{name}-3"]
        base = by_service[name][0].port
        assert [s.port for s in by_service[name]] == [base, base + 100, base + 200]
        assert {s.module for s in by_service[name]} == {f"services.{name}"}
    assert [s.name for s in by_service["analytics"]] == ["analytics"]  # faust: one
    assert len({s.port for s in plan}) == len(plan)
    assert len({s.name for s in plan}) == len(plan)


@pytest.mark.parametrize("n", [0, 10])
def test_a_replica_count_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(SupervisorError, match="replicas must be 1 to 9"):
        replicate(load_manifest(), n)


def test_replicas_of_a_service_on_sqlite_are_refused_naming_it_and_the_fix(
    tmp_path: Path,
) -> None:
    plan = replicate(load_manifest(), 2)
    env = {f"{n.upper()}_DATABASE_URL": POSTGRES.format(n) for n in SAGA if n != "payments"}
    why = shared_sqlite(plan, 2, tmp_path, env)
    assert why is not None and "\n" not in why
    assert why.startswith("--replicas 2 needs PostgreSQL for payments ")
    assert "set PAYMENTS_DATABASE_URL to postgresql+asyncpg://" in why
    assert "query" not in why and "analytics" not in why  # query: a read model per instance
    env["PAYMENTS_DATABASE_URL"] = POSTGRES.format("payments")
    assert shared_sqlite(plan, 2, tmp_path, env) is None
    assert shared_sqlite(load_manifest(), 1, tmp_path, {}) is None  # one instance: SQLite


def test_instances_share_their_services_database_but_query_keeps_its_own(
    tmp_path: Path,
) -> None:
    plan = {s.name: s for s in replicate(load_manifest(), 2)}
    env = {"ORDERS_DATABASE_URL": POSTGRES.format("orders")}
    assert child_database(plan["orders-2"], tmp_path, env) == POSTGRES.format("orders")
    assert child_database(plan["orders"], tmp_path, env) == POSTGRES.format("orders")
    assert child_database(plan["query"], tmp_path, env) == ""  # the service's default
    assert child_database(plan["query-2"], tmp_path, env) == sqlite_url(tmp_path / "query-2.db")
    env["QUERY_2_DATABASE_URL"] = POSTGRES.format("query_2")
    assert child_database(plan["query-2"], tmp_path, env) == POSTGRES.format("query_2")


def test_ps_and_down_see_the_instances_up_recorded(tmp_path: Path) -> None:
    assert running_plan(tmp_path) == load_manifest()
    record_replicas(tmp_path, 2)
    names = [s.name for s in running_plan(tmp_path)]
    assert "orders-2" in names and "query-2" in names and "analytics-2" not in names


def test_choreo_up_with_replicas_on_sqlite_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    for name in SAGA:
        monkeypatch.delenv(f"{name.upper()}_DATABASE_URL", raising=False)
    assert main(["up", "--replicas", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no broker, no topics, no service
    (line,) = err.strip().splitlines()
    assert "--replicas 2 needs PostgreSQL for orders, inventory, payments" in line
    assert "ORDERS_DATABASE_URL" in line
    assert not (tmp_path / "run").exists()


def test_a_gateway_sees_every_instance_of_a_service() -> None:
    ups = upstreams(replicate(load_manifest(), 2))
    assert ups["orders"] == ["127.0.0.1:8101", "127.0.0.1:8201"]
    assert ups["query"] == ["127.0.0.1:8106", "127.0.0.1:8206"]
    assert ups["analytics"] == ["127.0.0.1:8107"]
