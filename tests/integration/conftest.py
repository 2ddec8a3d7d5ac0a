"""Fixtures for tests against the real broker: fresh topics and databases per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from events.catalogue import TopicSpec
from events.db import Database
from events.kafka import KafkaConnection
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
        await apply_topics(
            KafkaConnection(kafka_bootstrap), [TopicSpec(name, partitions, -1, (), {})]
        )
        return name

    return create


@pytest.fixture
async def new_db(
    database_url: Callable[[str], str],
) -> AsyncIterator[Callable[[str], Awaitable[Database]]]:
    """Fresh databases (SQLite or PostgreSQL, see CHOREO_TEST_DB) with the test tables."""
    opened: list[Database] = []

    async def make(name: str = "service") -> Database:
        db = await new_database(database_url(name))
        opened.append(db)
        return db

    yield make
    for db in opened:
        await db.dispose()
