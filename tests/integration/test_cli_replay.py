"""``choreo replay`` runs the query service's rebuild in its own process, on the database
``QUERY_DATABASE_URL`` names (as ``choreo up`` gives it to the query service, whatever
``DATABASE_URL`` says), and fails in one ``choreo: error:`` line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.integration.test_query_kit import QueryEnv, publish_saga, query_env
from tests.integration.test_query_replay import busy_saga
from tests.support import eventually, run_module

pytestmark = pytest.mark.integration
__all__ = ["query_env"]


def choreo(env: QueryEnv, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    child = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    child.update(
        KAFKA_BOOTSTRAP_SERVERS=env.bootstrap,
        TOPIC_PREFIX=env.prefix,
        VAR_DIR=str(tmp_path),
        QUERY_DATABASE_URL=env.settings.database_url,
        # Not the query service's: the command must not take it for the query database.
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'not-this.db'}",
    )
    done = run_module("services.tools.stack", "replay", *args, env=child)
    return done.returncode, done.stdout, done.stderr


async def test_choreo_replay_rebuilds_and_verifies_the_query_database(
    query_env: QueryEnv, tmp_path: Path
) -> None:
    env = query_env
    await env.caught_up(await publish_saga(env, busy_saga(20)))

    status, out, err = await asyncio.to_thread(choreo, env, tmp_path, "query", "--readers", "1")
    assert status == 0, err
    assert "rebuilt generation 2 from" in out and "now serving it" in out
    await eventually(lambda: env.runner.generation == 2, what="the runner to follow the switch")

    status, out, err = await asyncio.to_thread(choreo, env, tmp_path, "query", "--verify")
    assert status == 0, out + err
    assert "matches the live one" in out

    status, out, err = await asyncio.to_thread(choreo, env, tmp_path, "orders")
    assert (status, out) == (2, "")
    assert err == "choreo: error: unknown projection 'orders'; known: query\n"
