"""The third-party stand-ins (the payment provider, the carrier) as real processes, for any
test: ``running_standin("provider", var_dir)`` starts one on a free port (its own database:
SQLite in ``var_dir`` unless a URL is given) and stops it on exit; the ``provider`` and
``carrier`` fixtures do that with a fresh database of the session's kind (SQLite, or
PostgreSQL with CHOREO_TEST_DB=postgres). ``faults(...)`` tells one what to fail."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.supervisor import ProcessSpec, start, stop, wait_ready
from infra.broker import free_ports

STANDINS = ("provider", "carrier")


@dataclass
class StandInProcess:
    name: str
    port: int
    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> ProcessSpec:
        return ProcessSpec(self.name, f"services.{self.name}", self.port, replicated=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.var_dir / "logs" / f"{self.name}.log"

    def start(self, deadline_s: float = 60) -> None:
        """Starts it (again: same port, same database) and waits until it is ready."""
        start([self.spec], var_dir=self.var_dir, bootstrap="", env=self.env, report=lambda _: None)
        wait_ready([self.spec], var_dir=self.var_dir, deadline_s=deadline_s)

    def stop(self, *, kill: bool = False) -> None:
        stop([self.spec], var_dir=self.var_dir, kill=kill)

    def faults(self, **faults: Any) -> dict[str, Any]:
        """PUT /admin/faults: failure_rate, latency_ms, down, down_for_s (others unchanged);
        ``faults(failure_rate=0, latency_ms=0, down=False)`` clears them."""
        answer = httpx.put(f"{self.url}/admin/faults", json=faults, timeout=5)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, **kwargs)


@contextlib.contextmanager
def running_standin(
    name: str, var_dir: Path, database_url: str = "", env: dict[str, str] | None = None
) -> Iterator[StandInProcess]:
    """``name`` ("provider" or "carrier") running on a free port until the block ends.
    ``env``: its settings (``PROVIDER_DECLINED_CUSTOMERS``, ``CARRIER_COUNTRIES``, ...)."""
    if name not in STANDINS:
        raise ValueError(f"no stand-in {name!r}; there are {', '.join(STANDINS)}")
    (port,) = free_ports(1)
    child_env = dict(env or {})
    if database_url:
        child_env[f"{name.upper()}_DATABASE_URL"] = database_url
    process = StandInProcess(name, port, var_dir, child_env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def provider(tmp_path: Path, database_url: Callable[[str], str]) -> Iterator[StandInProcess]:
    """The payment provider, running, with a fresh database."""
    with running_standin("provider", tmp_path / "var", database_url("provider")) as process:
        yield process


@pytest.fixture
def carrier(tmp_path: Path, database_url: Callable[[str], str]) -> Iterator[StandInProcess]:
    """The carrier, running, with a fresh database."""
    with running_standin("carrier", tmp_path / "var", database_url("carrier")) as process:
        yield process
