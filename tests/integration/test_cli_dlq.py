"""`choreo dlq list|show|redrive` and `choreo status` against the real broker."""

from __future__ import annotations

import json
import uuid

import pytest

from events.catalogue import Catalogue
from events.cli.main import main
from events.codec import AvroCodec
from events.consumer import EventConsumer
from events.envelope import Event, utcnow
from events.kafka import KafkaConnection
from events.outbox import Outbox, UnitOfWork
from events.publisher import Draft, publish
from events.routing import PermanentError, Router
from events.topics import apply_topics
from schemas.models import FundsDeposited
from tests.integration.harness import running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_dead_letter_listed_shown_and_redriven(kafka_bootstrap, new_db, monkeypatch, capsys):
    prefix = unique("ops") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    codec = AvroCodec(catalogue)
    db = await new_db("payments")
    broken = {"on": True}
    applied: list[str] = []
    router = Router()

    @router.on(FundsDeposited)
    async def deposit(uow: UnitOfWork, event: Event[FundsDeposited]) -> None:
        if broken["on"]:
            raise PermanentError("account service misconfigured")
        applied.append(event.payload.deposit_id)

    name = f"{prefix}payments"
    consumer = EventConsumer(
        name=name,
        topics=[f"{prefix}payments.requests"],
        router=router,
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(kafka_bootstrap),
    )
    deposit_id = str(uuid.uuid4())
    await publish(
        codec,
        KafkaConnection(kafka_bootstrap),
        [
            Draft(
                "FundsDeposited",
                {
                    "deposit_id": deposit_id,
                    "customer_id": "c1",
                    "amount_cents": 500,
                    "deposited_at": utcnow(),
                },
                "c1",
            )
        ],
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    async with running(consumer):
        await eventually(lambda: consumer.stats.dead_lettered == 1, what="dead-lettered")
        capsys.readouterr()
        assert await _cli(["dlq", "list", "--output", "json"]) == 0
        (letter,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert letter["consumer"] == name and letter["event_type"] == "FundsDeposited"
        assert "misconfigured" in letter["reason"]
        assert letter["origin"].startswith(f"{prefix}payments.requests[")

        assert await _cli(["dlq", "show", letter["id"]]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert deposit_id in shown["payload"]
        assert await _cli(["dlq", "show", letter["id"], letter["id"], "--output", "json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(line) for line in lines] == [shown, shown]  # a line each

        assert await _cli(["status", "--output", "json"]) == 3  # no service HTTP is up
        status = json.loads(capsys.readouterr().out)
        payments = next(s for s in status["services"] if s["service"] == "payments")
        assert payments["dead_letters"] == 1

        broken["on"] = False  # the fix is deployed; re-drive the letter
        assert await _cli(["dlq", "redrive", letter["id"]]) == 0
        assert "re-published" in capsys.readouterr().out
        await eventually(lambda: applied == [deposit_id], what="re-driven event applied")

    assert await _cli(["dlq", "redrive", "nope"]) == 1
    assert "not a dead-letter id" in capsys.readouterr().err


async def _cli(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)  # the CLI runs its own event loop


async def test_dlq_list_shows_parked_events_per_key_and_release_applies_them(
    kafka_bootstrap, new_db, monkeypatch, capsys, tmp_path
):
    prefix = unique("ops") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()))
    codec = AvroCodec(catalogue)
    db = await new_db("payments")
    customer = unique("c")
    deposits = [str(uuid.uuid4()) for _ in range(3)]
    applied: list[str] = []
    router = Router()

    @router.on(FundsDeposited)
    async def deposit(uow: UnitOfWork, event: Event[FundsDeposited]) -> None:
        if event.payload.deposit_id == deposits[0]:
            raise PermanentError("account service misconfigured")
        applied.append(event.payload.deposit_id)

    name = f"{prefix}payments"
    consumer = EventConsumer(
        name=name,
        topics=[f"{prefix}payments.requests"],
        router=router,
        db=db,
        codec=codec,
        outbox=Outbox(codec, name),
        kafka=KafkaConnection(kafka_bootstrap),
        block_sync_interval_ms=200,
    )
    drafts = [
        Draft(
            "FundsDeposited",
            {
                "deposit_id": d,
                "customer_id": customer,
                "amount_cents": 500,
                "deposited_at": utcnow(),
            },
            customer,
        )
        for d in deposits
    ]
    await publish(codec, KafkaConnection(kafka_bootstrap), drafts)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))  # no other service's database is found
    monkeypatch.setenv("PAYMENTS_DATABASE_URL", db.url)
    async with running(consumer):
        await eventually(lambda: consumer.stats.parked == 2, what="two deposits parked")
        capsys.readouterr()
        assert await _cli(["dlq", "list", "--output", "json"]) == 0
        (letter,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert letter["blocked_key"] == customer and letter["parked"] == 2
        assert await _cli(["dlq", "list", "--consumer", name]) == 0
        out = capsys.readouterr().out
        assert f"[blocks key {customer}: 2 parked]" in out
        assert f"{name}  key {customer}: 2 parked behind {letter['event_id']}" in out
        assert applied == []

        assert await _cli(["dlq", "release", name, "nobody"]) == 1
        assert "no blocked key 'nobody'" in capsys.readouterr().err
        assert await _cli(["dlq", "release", name, customer]) == 0
        assert f"released key {customer}" in capsys.readouterr().out
        assert applied == deposits[1:]  # in order, without the first

        # The skipped event is skipped for good: its letter re-driven is a duplicate.
        duplicates = consumer.stats.duplicates
        assert await _cli(["dlq", "redrive", letter["id"]]) == 0
        assert "re-published" in capsys.readouterr().out
        await eventually(
            lambda: consumer.stats.duplicates > duplicates, what="re-driven letter skipped"
        )
        assert applied == deposits[1:]
        assert await _cli(["dlq", "list", "--output", "json"]) == 0
        (after,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert "blocked_key" not in after
