"""Instances of one service starting together on one fresh database each create its tables:
none may fail on another's CREATE TABLE (replicas on Kubernetes start at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import inspect

from events.db import Database
from events.tables import metadata as platform_metadata
from services.orders.tables import metadata as orders_metadata

pytestmark = pytest.mark.integration


async def test_instances_creating_tables_at_once_all_succeed(
    database_url: Callable[[str], str],
) -> None:
    for _ in range(3):
        url = database_url("create-race")
        instances = [Database(url, single_connection=False) for _ in range(4)]
        try:
            await asyncio.gather(
                *(db.create_all(platform_metadata, orders_metadata) for db in instances)
            )
            async with instances[0].engine.connect() as conn:
                names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            for db in instances:
                await db.dispose()
        assert set(platform_metadata.tables) | set(orders_metadata.tables) <= names
