"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.broker import BrokerSpec, down, free_port, up


def _private_spec(home: Path) -> BrokerSpec:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return BrokerSpec(home=home, port=port, controller_port=controller_port)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a
    broker started from the Maven jars in a fresh home and stopped at the end of the session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    spec = _private_spec(tmp_path_factory.mktemp("kafka"))
    try:
        up(spec)
        yield spec.bootstrap
    finally:
        down(spec)


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], BrokerSpec]]:
    """Starts private brokers (own home, free ports) for tests that stop and restart one;
    every broker it started is stopped at teardown."""
    started: list[BrokerSpec] = []

    def start() -> BrokerSpec:
        spec = _private_spec(tmp_path_factory.mktemp("broker"))
        started.append(spec)  # before up(): a broker that half-started is still stopped
        up(spec)
        return spec

    yield start
    for spec in started:
        down(spec)
