"""Fixtures for tests against the real broker: fresh topics and databases per test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from events.catalogue import TopicSpec
from events.db import Database
from events.topics import apply_topics
from tests.integration.harness import new_database
from tests.support import unique

pytestmark = pytest.mark.integration

NewTopic = Callable[..., Awaitable[str]]


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> NewTopic:
    """Creates a random topic (and its dead-letter twin) and returns its name."""

    async def create(partitions: int = 3, prefix: str = "t") -> str:
        name = unique(prefix)
        await apply_topics(kafka_bootstrap, [TopicSpec(name, partitions, -1, (), {})])
        return name

    return create


@pytest.fixture
def new_db(tmp_path: Path) -> Callable[[str], Awaitable[Database]]:
    opened: list[Database] = []

    async def make(name: str = "service") -> Database:
        db = await new_database(tmp_path / f"{name}.db")
        opened.append(db)
        return db

    return make
