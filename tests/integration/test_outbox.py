"""The unit of work and the outbox table, on the database alone (no broker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.relay import OutboxRelay, RelayConfig
from events.tables import outbox
from tests.integration.harness import Ping, applied, codec_for
from tests.support import unique

pytestmark = pytest.mark.integration


async def count(db, table) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def test_state_and_events_commit_together_or_not_at_all(new_db):
    db = await new_db("svc")
    codec = codec_for(unique("t"))
    box = Outbox(codec, "svc")
    woken = []
    box.on_commit(lambda: woken.append(True))

    async with UnitOfWork(db, box) as uow:
        await uow.session.execute(applied.insert().values(aggregate_id="a", seq=1, event_id="x"))
        uow.emit(Ping(aggregate_id="a", seq=1), key="a")
        # leaving without commit: a crash or an exception in the handler
    assert await count(db, applied) == 0 and await count(db, outbox) == 0
    assert woken == []

    async with UnitOfWork(db, box) as uow:
        await uow.session.execute(applied.insert().values(aggregate_id="a", seq=1, event_id="x"))
        env = uow.emit(Ping(aggregate_id="a", seq=1), key="a")
        await uow.commit()
    assert await count(db, applied) == 1 and await count(db, outbox) == 1
    assert woken == [True]
    async with db.session() as s:
        row = (await s.execute(select(outbox))).mappings().one()
    assert row["event_id"] == env.event_id and row["key"] == "a" and row["sent_at"] is None
    assert codec.decode(row["payload"]).payload == {"aggregate_id": "a", "seq": 1, "note": ""}


async def test_purge_removes_only_sent_rows_older_than_retention(new_db):
    db = await new_db("svc")
    box = Outbox(codec_for(unique("t")), "svc")
    async with UnitOfWork(db, box) as uow:
        for seq in range(6):
            uow.emit(Ping(aggregate_id="a", seq=seq), key="a")
        await uow.commit()
    now = utcnow()
    async with db.session() as s, s.begin():
        await s.execute(
            update(outbox).where(outbox.c.id <= 2).values(sent_at=now - timedelta(days=10))
        )
        await s.execute(update(outbox).where(outbox.c.id.in_([3, 4])).values(sent_at=now))
    relay = OutboxRelay(
        db, KafkaConnection("127.0.0.1:1"), config=RelayConfig(retention=timedelta(days=7))
    )
    assert await relay.purge() == 2
    assert await count(db, outbox) == 4
    unsent, age = await relay.backlog()
    assert unsent == 2 and age is not None and age >= 0
