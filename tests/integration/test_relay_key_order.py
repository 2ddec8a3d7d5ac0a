"""On PostgreSQL outbox ids are taken at INSERT and transactions commit in any order, so the
relay, selecting after the last id it published, can pass over a row that commits late. A
later row of the same key must still not reach Kafka before it: the chaos test
(tests/e2e/test_cluster_chaos.py) saw an order's OrderCancelled land before its OrderCreated,
and inventory then reserved stock for a cancelled order.

The late commit is made by hand: a row given an id below the relay's position after the
relay published past it, as a transaction that took its id first and committed last leaves
it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from events.kafka import KafkaConnection
from events.outbox import UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from tests.integration.harness import Ping, read_all, service_outbox_on_postgres
from tests.support import unique

pytestmark = pytest.mark.integration

# No rescan or mark unless the relay asks for one: the test places the late row itself.
CONFIG = RelayConfig(rescan_every_s=3600, mark_every_s=3600, idle_poll_s=0.05)


async def test_a_row_passed_over_reaches_kafka_before_the_later_rows_of_its_key(
    kafka_bootstrap, new_topic, new_db, db_backend
):
    topic, codec, db, outbox = await service_outbox_on_postgres(
        new_topic, new_db, db_backend, "SQLite has one writer at a time: its ids commit in order"
    )
    order, other = unique("order"), unique("other")

    async def write(key: str, seq: int) -> int:
        async with UnitOfWork(db, outbox) as uow:
            uow.emit(Ping(aggregate_id=key, seq=seq), key=key)
            await uow.commit()
        async with db.session() as s:
            return int((await s.execute(text("SELECT max(id) FROM choreo_outbox"))).scalar_one())

    gap = await write(other, 0)
    async with db.session() as s, s.begin():  # the id a slow transaction would hold
        await s.execute(text("DELETE FROM choreo_outbox WHERE id = :id"), {"id": gap})
    await write(other, 1)
    relay = OutboxRelay(db, KafkaConnection(kafka_bootstrap), config=CONFIG, client_id=unique("r"))
    try:
        assert await relay.publish_batch() == 1  # the other key's row; the relay is past gap

        created = await write(order, 0)  # the order's first event, committed late ...
        async with db.session() as s, s.begin():
            await s.execute(
                text("UPDATE choreo_outbox SET id = :gap WHERE id = :id"),
                {"gap": gap, "id": created},
            )
        await write(order, 1)  # ... and the next one of its key, committed after it
        assert await relay.publish_batch() == 0, "a later row of the key went first"
        assert await relay.publish_batch() == 2  # the rescan: from the oldest unsent row
    finally:
        await relay.close()

    records = await read_all(kafka_bootstrap, topic, expected=3)
    ours = sorted((r for r in records if r.key.decode() == order), key=lambda r: r.offset)
    assert [codec.decode(r.value).payload["seq"] for r in ours] == [0, 1]
