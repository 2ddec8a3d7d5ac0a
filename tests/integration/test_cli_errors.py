"""Every ``choreo`` command that talks to the broker or a service's database fails in one
line on stderr, with a non-zero status and no traceback, when it cannot reach it; listings
print JSON with ``--output json``.

The commands run as the user runs them: a process of ``python -m services.tools.stack``
(the ``choreo`` script) from this tree, so that what reaches stderr (warnings at exit,
aiokafka's logs) is seen too.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.db import sqlite_url
from events.kafka import KafkaConnection
from events.topics import apply_topics
from infra.broker import free_port
from tests.support import run_module, unique

pytestmark = pytest.mark.integration

SECRET = "s3cret-pw"


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


def choreo(*args: str, env: dict[str, str]) -> Ran:
    done = run_module("services.tools.stack", *args, env=env, timeout=120)
    return Ran(done.returncode, done.stdout, done.stderr)


def _env(tmp_path: Path, bootstrap: str, **extra: str) -> dict[str, str]:
    # No service database but those a test names: the services' URLs are dropped and the
    # default SQLite files are looked for in an empty directory.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    return {
        **env,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": unique("clierr") + ".",
        "VAR_DIR": str(tmp_path),
        **extra,
    }


def assert_one_line_error(ran: Ran, *expected: str) -> str:
    assert ran.status == 1, ran
    assert "Traceback" not in ran.err, ran.err
    assert ran.err.count("\n") == 1 and ran.err.startswith("choreo: error: "), ran.err
    for text in expected:
        assert text in ran.err, ran.err
    return ran.err


# --------------------------------------------------------------------------- broker down

RESTOCK = [
    "StockRestocked",
    "--field",
    "restock_id=7c9e6679-7425-40de-944b-e07fc1f99a7b",
    "--field",
    "sku=widget",
    "--field",
    "quantity=5",
]
BROKER_COMMANDS = {
    "topics apply": ["topics", "apply"],
    "dlq list": ["dlq", "list"],
    "dlq show": ["dlq", "show", "orders.events.dlq:0:0"],
    "dlq redrive": ["dlq", "redrive", "orders.events.dlq:0:0"],
    "tail": ["tail", "orders.events", "--max", "1"],
    "publish": ["publish", *RESTOCK],
}


@pytest.mark.no_database
@pytest.mark.parametrize("command", sorted(BROKER_COMMANDS))
def test_a_command_with_the_broker_down_fails_in_one_line(tmp_path: Path, command: str) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    ran = choreo(*BROKER_COMMANDS[command], env=_env(tmp_path, nobody))
    assert_one_line_error(ran, f"cannot reach Kafka at {nobody}", "choreo broker up")
    assert ran.out == ""


@pytest.mark.no_database
def test_status_with_the_broker_down_says_so_and_prints_nothing_on_stderr(
    tmp_path: Path,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    ran = choreo("status", "--output", "json", env=_env(tmp_path, nobody))
    assert ran.status == 3 and ran.err == "", ran  # no service is up either
    assert json.loads(ran.out)["kafka"].startswith("unreachable")


# --------------------------------------------------------------------------- database down

DATABASE_COMMANDS = {
    "outbox list": ["outbox", "list"],
    "outbox show": ["outbox", "show", "orders:1"],
    "outbox retry": ["outbox", "retry", "orders:1"],
    "outbox retry --all": ["outbox", "retry", "--all"],
    "outbox drop": ["outbox", "drop", "orders:1"],
    "dlq release": ["dlq", "release", "{prefix}orders", "some-key", "--wait", "0"],
}


def _unopenable(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite directory":
        (tmp_path / "a-directory.db").mkdir()
        return sqlite_url(tmp_path / "a-directory.db")
    return f"postgresql+asyncpg://choreo:{SECRET}@127.0.0.1:{free_port()}/orders"


@pytest.mark.parametrize("kind", ["sqlite directory", "postgres nobody listens"])
@pytest.mark.parametrize("command", sorted(DATABASE_COMMANDS))
def test_a_command_with_its_database_unreachable_fails_in_one_line_without_the_secret(
    tmp_path: Path, command: str, kind: str
) -> None:
    url = _unopenable(kind, tmp_path)
    env = _env(tmp_path, f"127.0.0.1:{free_port()}", ORDERS_DATABASE_URL=url)
    args = [a.format(prefix=env["TOPIC_PREFIX"]) for a in DATABASE_COMMANDS[command]]
    ran = choreo(*args, env=env)
    shown = url.replace(SECRET, "***")
    err = assert_one_line_error(ran, f"cannot use the orders database {shown}")
    assert "ORDERS_DATABASE_URL" in err and SECRET not in ran.out + ran.err


async def test_dlq_list_reads_the_broker_and_names_each_database_it_cannot_read(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, kafka_bootstrap, ORDERS_DATABASE_URL=_unopenable("pg", tmp_path))
    catalogue = Catalogue.load().prefixed(env["TOPIC_PREFIX"])
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    ran = choreo("dlq", "list", env=env)
    assert ran.status == 0 and "0 dead letter(s)" in ran.out, ran
    (line,) = ran.err.splitlines()
    assert line.startswith("cannot use the orders database postgresql+asyncpg://choreo:***@")
    assert SECRET not in ran.err


# --------------------------------------------------------------------------- JSON listings


@pytest.mark.no_database
async def test_topics_apply_and_list_print_json(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = _env(tmp_path, kafka_bootstrap)
    prefix = env["TOPIC_PREFIX"]
    ran = choreo("topics", "apply", "--output", "json", env=env)
    assert ran.status == 0, ran
    first = json.loads(ran.out)
    assert f"{prefix}orders.events" in first["created"]
    assert f"{prefix}orders.events.dlq" in first["created"]
    again = json.loads(choreo("topics", "apply", "--output", "json", env=env).out)
    acls = again.pop("acls")  # tests/integration/test_acls.py checks them
    assert again == {"created": [], "unchanged": first["created"], "differences": []}
    assert acls["authorizer"] is False

    ran = choreo("topics", "list", "--output", "json", env=env)
    listed = {doc["topic"]: doc for doc in map(json.loads, ran.out.splitlines())}
    orders = listed[f"{prefix}orders.requests"]
    assert orders["partitions"] == 3 and "OrderPlaced" in orders["event_types"]


@pytest.mark.no_database
def test_events_print_json_for_the_listing_and_for_one_type(tmp_path: Path) -> None:
    env = _env(tmp_path, f"127.0.0.1:{free_port()}")
    ran = choreo("events", "--output", "json", env=env)
    assert ran.status == 0, ran
    listed = {doc["event_type"]: doc for doc in map(json.loads, ran.out.splitlines())}
    assert set(listed) == set(Catalogue.load().event_types)
    placed = listed["OrderPlaced"]
    assert placed["topic"] == env["TOPIC_PREFIX"] + "orders.requests"
    assert {"name": "order_id", "type": "uuid"} in placed["fields"]

    ran = choreo("events", "OrderPlaced", "--output", "json", env=env)
    detail = json.loads(ran.out)
    assert detail["key"] == "order_id" and detail["schema"]["name"] == "OrderPlaced"
    assert detail["versions"][-1] == detail["version"]


@pytest.mark.no_database
def test_ps_prints_json(tmp_path: Path) -> None:
    ran = choreo("ps", "--output", "json", env=_env(tmp_path, f"127.0.0.1:{free_port()}"))
    assert ran.status == 3, ran  # nothing runs
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert rows and all(r["state"] == "down" and r["pid"] is None for r in rows)
    assert {"orders", "query"} <= {r["service"] for r in rows}


async def test_replay_with_its_database_unopenable_fails_in_one_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, kafka_bootstrap)
    env["QUERY_DATABASE_URL"] = _unopenable("sqlite directory", tmp_path)
    catalogue = Catalogue.load().prefixed(env["TOPIC_PREFIX"])
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    ran = choreo("replay", "query", env=env)
    # 2: the replay could not run (1 is --verify's "differences"), in one line.
    assert ran.status == 2 and "Traceback" not in ran.err, ran
    (line,) = ran.err.strip().splitlines()
    assert line.startswith("choreo: error: cannot use the query database sqlite+aiosqlite:///")
    assert "QUERY_DATABASE_URL" in line


@pytest.mark.no_database
def test_replay_with_the_broker_down_fails_in_one_line(tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    ran = choreo("replay", "query", "--readers", "0", env=_env(tmp_path, nobody))
    assert ran.status == 2 and "Traceback" not in ran.err, ran
    (line,) = ran.err.strip().splitlines()
    assert line.startswith(f"choreo: error: cannot reach Kafka at {nobody}"), line


# --------------------------------------------------------------------------- starting the stack


@pytest.fixture
def port_in_use() -> Iterator[int]:
    """A port something listens on: the local broker cannot start there."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.no_database
@pytest.mark.parametrize("command", [["up"], ["demo", "--orders-per-path", "1"]])
def test_up_and_demo_use_the_broker_the_settings_name_and_fail_in_one_line_when_it_is_down(
    tmp_path: Path, command: list[str], port_in_use: int
) -> None:
    # Were the local broker started instead, it would fail on the busy port: another line.
    nobody = f"127.0.0.1:{free_port()}"
    env = _env(tmp_path, nobody, CHOREO_KAFKA_HOME=str(tmp_path / "kafka"))
    env["CHOREO_KAFKA_PORT"] = str(port_in_use)
    ran = choreo(*command, env=env)
    assert_one_line_error(ran, f"cannot reach Kafka at {nobody}", "choreo broker up")
    assert not (tmp_path / "logs").exists()  # no service was started


@pytest.mark.no_database
@pytest.mark.parametrize(
    "command",
    [["broker", "status"], ["broker", "up"], ["down", "--broker"], ["up"], ["demo"]],
)
def test_the_local_broker_commands_with_a_bad_port_setting_fail_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = _env(tmp_path, "unused:9092", CHOREO_KAFKA_HOME=str(tmp_path / "kafka"))
    del env["KAFKA_BOOTSTRAP_SERVERS"]  # the local broker is the one to use
    env["CHOREO_KAFKA_PORT"] = "ninety"
    ran = choreo(*command, env=env)
    assert_one_line_error(ran, "CHOREO_KAFKA_PORT must be a port number, got 'ninety'")
