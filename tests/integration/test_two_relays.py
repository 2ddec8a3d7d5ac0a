"""Two relay instances of one service on PostgreSQL: one holds the outbox's lease and
publishes, the other stands by; when the leader stops, or its lease connection is cut, the
standby takes over. No row is lost, and no aggregate's events are reordered (a row may be
published twice around a cut: the inbox skips the copy)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from events.db import Database
from events.kafka import KafkaConnection
from events.relay import OutboxRelay, RelayConfig
from tests.integration.harness import (
    read_all,
    service_outbox_on_postgres,
    topic_size,
    write_pings,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

# Fast enough for a test: a standby tries for the lease every 50 ms.
CONFIG = RelayConfig(
    batch_size=8, idle_poll_s=0.05, lease_retry_s=0.05, backoff_initial_s=0.05, backoff_max_s=0.2
)

_CUT_LEASE = text(
    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
    "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
)


def assert_first_copies_in_key_order(records: list[Any], codec: Any) -> set[tuple[str, int]]:
    """Each aggregate's events, first copies only, are in order on the topic; returns them."""
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        p = codec.decode(record.value).payload
        assert record.key.decode() == p["aggregate_id"]
        if (p["aggregate_id"], p["seq"]) in seen:
            continue  # a copy published again around a cut
        seen.add((p["aggregate_id"], p["seq"]))
        assert p["seq"] > last.get(p["aggregate_id"], -1), "an aggregate was reordered"
        last[p["aggregate_id"]] = p["seq"]
    return seen


async def test_a_standby_relay_takes_over_when_the_leader_stops(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    topic, codec, db, outbox = await service_outbox_on_postgres(
        new_topic,
        new_db,
        db_backend,
        "the lease is a PostgreSQL advisory lock (SQLite has one writer anyway)",
    )
    aggregates = [unique("agg") for _ in range(12)]
    relays = [
        OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=CONFIG, client_id=f"relay-{i}")
        for i in (0, 1)
    ]
    stops = [asyncio.Event(), asyncio.Event()]
    first = asyncio.create_task(relays[0].run(stops[0]))
    written = await write_pings(db, outbox, aggregates, 10, per_tx=9)
    await eventually(lambda: relays[0].published >= len(written), what="the leader publishes")
    second = asyncio.create_task(relays[1].run(stops[1]))
    await eventually(lambda: relays[1].standby, what="the second relay stands by")
    written += await write_pings(db, outbox, aggregates, 10, per_tx=9, start=10)
    await eventually(
        lambda: relays[0].published >= len(written), what="the leader publishes the new rows"
    )
    assert relays[1].published == 0 and not relays[1].holds_lease, "a standby publishes nothing"

    stops[0].set()  # the leader shuts down and hands the lease back
    await first
    written += await write_pings(db, outbox, aggregates, 10, per_tx=9, start=20)
    await eventually(
        lambda: relays[1].published >= 10 * len(aggregates),
        what="the standby takes over and publishes the rows written after",
    )
    stops[1].set()
    await second
    assert sum(r.published for r in relays) == len(written)
    records = await read_all(kafka_bootstrap, topic, expected=len(written))
    assert assert_first_copies_in_key_order(records, codec) == set(written)
    assert len(records) == len(written)  # a graceful hand-over publishes nothing twice


async def test_a_leader_whose_lease_connection_is_cut_stops_and_nothing_is_lost(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    topic, codec, db, outbox = await service_outbox_on_postgres(
        new_topic,
        new_db,
        db_backend,
        "the lease is a PostgreSQL advisory lock (SQLite has one writer anyway)",
    )
    admin = Database(db.url)  # a pool of its own: the connection that cuts the leader's
    aggregates = [unique("agg") for _ in range(12)]
    cuts: list[int] = []

    async def cut_after_first_batch(rows: object) -> None:
        # Rows acked, not yet marked sent: the leader's lease connection dies under it.
        if not cuts:
            async with admin.session() as s:
                cuts.extend(int(x) for x in (await s.execute(_CUT_LEASE)).scalars().all())

    relays = [
        OutboxRelay(
            db,
            KafkaConnection(kafka_bootstrap),
            config=CONFIG,
            client_id="relay-0",
            after_publish=cut_after_first_batch,
        ),
        OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=CONFIG, client_id="relay-1"),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relays[0].run(stop))]
    try:
        await eventually(lambda: relays[0].holds_lease, what="the first relay leads")
        tasks.append(asyncio.create_task(relays[1].run(stop)))
        await eventually(lambda: relays[1].standby, what="the second relay stands by")
        written = []
        for wave in range(4):  # rows keep arriving while both relays run
            written += await write_pings(db, outbox, aggregates, 10, per_tx=9, start=wave * 10)

        async def nothing_unsent() -> bool:
            return (await relays[1].backlog())[0] == 0  # acked and marked sent

        await eventually(nothing_unsent, deadline_s=60, what="every row published and marked")
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await admin.dispose()
    assert cuts == [1], "the leader's lease connection was cut once"
    assert relays[0].failures + relays[1].failures >= 1, "the cut leader noticed"
    records = await read_all(
        kafka_bootstrap, topic, expected=await topic_size(kafka_bootstrap, topic)
    )
    assert assert_first_copies_in_key_order(records, codec) == set(written)
    assert len(records) <= len(written) + CONFIG.batch_size  # at most the cut batch again
