"""Two relay instances of one service on PostgreSQL: no row published twice, no aggregate's
events reordered (rows are claimed with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio

import pytest

from events.outbox import Outbox
from events.relay import OutboxRelay, RelayConfig
from tests.integration.harness import codec_for, read_all, write_pings
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_two_relays_publish_each_row_once_in_key_order(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    if db_backend != "postgres":
        pytest.skip("two relays on one database need PostgreSQL's row locks")
    topic = await new_topic(partitions=3)
    codec = codec_for(topic)
    db = await new_db("service")
    outbox = Outbox(codec, "service")
    aggregates = [unique("agg") for _ in range(12)]
    # A batch smaller than the number of aggregates: a claim holds some keys' oldest rows,
    # and the other relay can claim the next keys' meanwhile.
    config = RelayConfig(batch_size=8, idle_poll_s=0.05)
    holding = asyncio.Event()

    async def first_waits_for_second(_rows: object) -> None:
        # The first relay holds its first claim (its rows stay locked) until the second
        # relay has published rows of other keys: both take part, whatever the timing.
        if not holding.is_set():
            holding.set()
            await eventually(lambda: relays[1].published > 0, what="the second relay publishes")

    relays = [
        OutboxRelay(
            db,
            kafka_bootstrap,
            config=config,
            client_id="relay-0",
            after_publish=first_waits_for_second,
        ),
        OutboxRelay(db, kafka_bootstrap, config=config, client_id="relay-1"),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    written = []
    for wave in range(4):  # rows keep arriving while both relays run
        written += await write_pings(db, outbox, aggregates, 20, per_tx=9, start=wave * 20)
    await eventually(
        lambda: sum(r.published for r in relays) >= len(written),
        deadline_s=60,
        what="every row published",
    )
    stop.set()
    await asyncio.gather(*tasks)
    assert holding.is_set(), "the first relay claimed rows"
    assert all(r.published > 0 for r in relays), "both relays took part"
    assert sum(r.published for r in relays) == len(written)

    records = await read_all(kafka_bootstrap, topic, expected=len(written))
    decoded = [codec.decode(r.value).payload for r in records]
    assert len(decoded) == len(written) == len({(p["aggregate_id"], p["seq"]) for p in decoded})
    last: dict[str, int] = {}
    for record, payload in zip(records, decoded, strict=True):
        assert record.key.decode() == payload["aggregate_id"]
    by_partition: dict[int, list[dict]] = {}
    for record, payload in zip(records, decoded, strict=True):
        by_partition.setdefault(record.partition, []).append(payload)
    for payloads in by_partition.values():
        for p in payloads:
            assert p["seq"] > last.get(p["aggregate_id"], -1), "an aggregate was reordered"
            last[p["aggregate_id"]] = p["seq"]
