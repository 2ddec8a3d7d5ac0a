"""`choreo dlq list|show|redrive` and `choreo status` against the real broker."""

from __future__ import annotations

import json
import uuid

import pytest

from events.catalogue import Catalogue, dead_letter_topic
from events.cli.main import main
from events.codec import AvroCodec
from events.consumer import EventConsumer
from events.dlq import DLQ_REASON, DLQ_TOPIC
from events.envelope import H_EVENT_TYPE, Event, utcnow
from events.kafka import KafkaConnection, reliable_producer
from events.outbox import Outbox, UnitOfWork
from events.publisher import Draft, prepare, publish
from events.routing import PermanentError, Router
from events.topics import apply_topics
from schemas.models import FundsDeposited
from tests.integration.harness import read_all, running, topic_size
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


async def test_redrive_refuses_a_letter_it_cannot_trust_and_publishes_nothing(
    kafka_bootstrap, monkeypatch, capsys
):
    # Letters written straight to a DLQ topic, as anyone allowed to write there could.
    prefix = unique("ops") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    kafka = KafkaConnection(kafka_bootstrap)
    await apply_topics(kafka, list(catalogue.topics.values()))
    codec = AvroCodec(catalogue)
    target, elsewhere = f"{prefix}payments.requests", f"{prefix}orders.events"
    dlq = dead_letter_topic(target)
    payload = {"deposit_id": str(uuid.uuid4()), "customer_id": "c1", "amount_cents": 5}
    (deposit,) = prepare(
        codec, [Draft("FundsDeposited", payload | {"deposited_at": utcnow()}, "c1")], "t"
    )
    price = {
        "sku": "s1",
        "unit_price_cents": 9,
        "restock_id": str(uuid.uuid4()),
        "priced_at": utcnow(),
    }
    (priced,) = prepare(codec, [Draft("SkuPriced", price, "s1")], "t")

    def headers(origin: str, event_type: str = "FundsDeposited") -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in deposit.envelope.to_headers() if k != H_EVENT_TYPE]
        return [
            *kept,
            (H_EVENT_TYPE, event_type.encode()),
            (DLQ_TOPIC, origin.encode()),
            (DLQ_REASON, b"broken"),
        ]

    letters = {  # name: (value, headers)
        "good": (deposit.value, headers(target)),
        "header names another topic": (deposit.value, headers(elsewhere)),
        "no origin header": (deposit.value, [h for h in headers(target) if h[0] != DLQ_TOPIC]),
        "not an event": (b"\x07\x01not avro", headers(target)),  # neither framing
        "an event of another topic": (priced.value, headers(target, event_type="SkuPriced")),
        "header says another type": (deposit.value, headers(target, event_type="SkuPriced")),
    }
    ids: dict[str, str] = {}
    producer = reliable_producer(kafka, client_id="dlq-writer")
    await producer.start()
    try:
        for name, (value, hdrs) in letters.items():
            md = await producer.send_and_wait(dlq, value, key=b"c1", headers=hdrs, partition=0)
            ids[name] = f"{dlq}:0:{md.offset}"
    finally:
        await producer.stop()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    reasons = {
        "header names another topic": f"header names {elsewhere}, not {target}",
        "no origin header": "header is missing",
        "not an event": "not an event of the catalogue",
        "an event of another topic": f"{target} does not carry SkuPriced",
        "header says another type": "header says SkuPriced, its bytes FundsDeposited",
    }
    capsys.readouterr()
    for name, reason in reasons.items():
        # With a good letter beside it: all or nothing.
        assert await _cli(["dlq", "redrive", ids["good"], ids[name]]) == 1, name
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert f"{ids[name]}: " in err and reason in err and "nothing published" in err, err
        assert ids["good"] not in err  # only the refused letter is named
        assert await _cli(["dlq", "redrive", "--dry-run", ids[name]]) == 1, name
        assert reason in capsys.readouterr().err
    assert await topic_size(kafka_bootstrap, target) == 0
    assert await topic_size(kafka_bootstrap, elsewhere) == 0

    assert await _cli(["dlq", "redrive", "--dry-run", ids["good"]]) == 0
    assert capsys.readouterr().out == f"would re-publish {ids['good']} to {target}\n"
    assert await topic_size(kafka_bootstrap, target) == 0
    assert await _cli(["dlq", "redrive", ids["good"]]) == 0
    assert f"{ids['good']} -> {target}[" in capsys.readouterr().out
    (record,) = await read_all(kafka_bootstrap, target, 1)
    assert record.value == deposit.value and record.key == b"c1"
    assert not any(k.startswith("dlq-") for k, _ in record.headers)
    assert await topic_size(kafka_bootstrap, elsewhere) == 0
