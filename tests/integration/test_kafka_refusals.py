"""A service that Kafka refuses (wrong password, no ACL for its principal) stops at start-up
with one line naming the principal and what to fix, instead of retrying for ever; a service
that is merely early for its broker still waits (tests/integration/test_broker_outage.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from events.catalogue import Catalogue
from events.kafka_auth import EXIT_REFUSED
from events.settings import PlatformSettings
from events.topics import apply_topics
from infra.broker import free_port
from tests.conftest import SecureKafka
from tests.support import run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]

DEADLINE_S = 90.0  # a service that retried instead would still be running then


async def _run_service(name: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Runs ``python -m services.<name>`` to its exit; its status and stderr lines."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{name}",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(DEADLINE_S):
            _, err = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        pytest.fail(f"services.{name} was still retrying after {DEADLINE_S:.0f}s")
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return child.returncode or 0, lines


def _service_env(secure_kafka: SecureKafka, principal: str, tmp_path: Path) -> dict[str, str]:
    return {
        **secure_kafka.environment(principal),
        "TOPIC_PREFIX": unique("refused") + ".",
        "VAR_DIR": str(tmp_path),
        "HTTP_PORT": "0",
        "LOG_FORMAT": "json",
    }


async def _topics_for(secure_kafka: SecureKafka, prefix: str) -> None:
    catalogue = Catalogue.load(PlatformSettings().schemas_dir).prefixed(prefix)
    await apply_topics(secure_kafka.connection(), list(catalogue.topics.values()))


async def test_a_service_with_a_wrong_password_exits_with_one_line(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    env = _service_env(secure_kafka, "notifications", tmp_path)
    await _topics_for(secure_kafka, env["TOPIC_PREFIX"])
    env["KAFKA_SASL_PASSWORD"] = "not-the-password-of-notifications"
    status, lines = await _run_service("notifications", env)
    assert status == EXIT_REFUSED, lines[-5:]
    assert lines[-1].startswith(
        f"notifications: kafka: User:notifications cannot log in to {secure_kafka.bootstrap}"
    ), lines[-5:]
    assert "KAFKA_SASL_PASSWORD" in lines[-1]
    assert all("not-the-password-of-notifications" not in line for line in lines)


async def test_a_service_without_its_acls_exits_naming_principal_and_fix(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    # Its topics exist under a fresh prefix no ACL names: the principal may use none of them.
    env = _service_env(secure_kafka, "notifications", tmp_path)
    await _topics_for(secure_kafka, env["TOPIC_PREFIX"])
    status, lines = await _run_service("notifications", env)
    assert status == EXIT_REFUSED, lines[-5:]
    assert lines[-1].startswith("notifications: kafka: User:notifications may not "), lines[-5:]
    assert "choreo topics apply" in lines[-1]
    password = secure_kafka.environment("notifications")["KAFKA_SASL_PASSWORD"]
    assert all(password not in line for line in lines)


def test_topics_apply_as_a_service_principal_says_it_may_not_create_them(
    secure_kafka: SecureKafka,
) -> None:
    env = {**secure_kafka.environment("orders"), "TOPIC_PREFIX": unique("nocreate") + "."}
    done = run_module("events.cli", "topics", "apply", env={**os.environ, **env}, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("choreo: error: kafka: User:orders may not "), lines[0]
    assert "choreo topics apply, or ask the cluster's admin" in lines[0]


async def test_analytics_with_a_wrong_password_ends_with_the_same_one_line(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    # faust runs analytics, not the platform's components: its crash is worded the same way.
    env = _service_env(secure_kafka, "analytics", tmp_path)
    await _topics_for(secure_kafka, env["TOPIC_PREFIX"])
    env.update(HTTP_PORT=str(free_port()), KAFKA_SASL_PASSWORD="not-the-password-of-analytics")
    status, lines = await _run_service("analytics", env)
    assert status == EXIT_REFUSED, lines
    assert lines[-1].startswith("analytics: kafka: User:analytics cannot log in to "), lines[-5:]
    assert all("not-the-password-of-analytics" not in line for line in lines)
