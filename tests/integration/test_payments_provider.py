"""Payments calling the real payment provider stand-in (its own process and database): a
charge is authorised and captured there, a timeout after the provider acted is retried under
the same key and charges once, a charge whose transaction never committed charges once when
its event comes again, a decline becomes the order's PaymentDeclined, refunds and a
cancellation that won the race are settled through the provider.

Payments' handlers run in this process, each event in its own unit of work as the consumer
runs them (tests.integration.service_kit); the crash test kills a payments process.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.db import Database
from events.dependency import DependencyUnavailable
from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.models import EventModel
from events.publisher import Draft, publish
from events.service import Service, ServiceContext
from events.supervisor import ProcessSpec, start, stop, wait_ready
from events.tables import outbox
from events.topics import apply_topics
from infra.broker import free_ports
from schemas.models import (
    Address,
    FundsDeposited,
    OrderCancelled,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    StockLine,
    StockReserved,
)
from services.payments.app import NAME, TOPICS, Settings
from services.payments.domain import idempotency_key
from services.payments.handlers import build_router
from services.payments.provider import Provider
from services.payments.tables import accounts, attempts, metadata, payments
from services.provider.tables import captures
from tests.integration.dependency_kit import Recorder, StandIn, calling, standin
from tests.integration.service_kit import deliver, emitted, handled_not_committed
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="Paris", postal_code="75001", country="FR")


@pytest.fixture
async def provider(tmp_path: Path, database_url: Callable[[str], str]) -> AsyncIterator[StandIn]:
    async with standin("provider", tmp_path, database_url) as running:
        yield running


def payments_with(
    provider: StandIn,
    tmp_path: Path,
    database_url: Callable[[str], str],
    recorder: Recorder | None = None,
    **client: Any,
) -> contextlib.AbstractAsyncContextManager[tuple[ServiceContext, Recorder]]:
    """Payments' handlers over a fresh database, calling ``provider`` through ``recorder``."""

    def service(client_of: Provider) -> Service:
        return Service(NAME, metadata, build_router(client_of), TOPICS)

    url = database_url("payments")
    return calling(provider, Provider, service, Settings, tmp_path, url, recorder, **client)


@pytest.fixture
async def paying(
    provider: StandIn, tmp_path: Path, database_url: Callable[[str], str]
) -> AsyncIterator[tuple[ServiceContext, Recorder]]:
    async with payments_with(provider, tmp_path, database_url) as pair:
        yield pair


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:8]}"


def deposit(customer_id: str, amount: int) -> FundsDeposited:
    return FundsDeposited(
        deposit_id=str(uuid.uuid4()),
        customer_id=customer_id,
        amount_cents=amount,
        deposited_at=utcnow(),
    )


def reserved(customer_id: str, total: int) -> StockReserved:
    return StockReserved(
        order_id=str(uuid.uuid4()),
        customer_id=customer_id,
        lines=[StockLine(sku="SKU-1", quantity=1)],
        total_cents=total,
        shipping_address=ADDRESS,
        reserved_at=utcnow(),
    )


def cancelled(r: StockReserved) -> OrderCancelled:
    return OrderCancelled(
        order_id=r.order_id,
        customer_id=r.customer_id,
        reason="changed my mind",
        failed_step=None,
        cancelled_at=utcnow(),
    )


async def ledger(provider: StandIn, customer_id: str) -> tuple[int, int]:
    row = await provider.get(f"/v1/ledger/{customer_id}")
    return row["captured_cents"], row["refunded_cents"]


async def books(ctx: ServiceContext, customer_id: str) -> tuple[int, int, int]:
    """(balance, captured, refunded) in payments' own books."""
    async with ctx.db.session() as s:
        query = select(accounts).where(accounts.c.customer_id == customer_id)
        r = (await s.execute(query)).mappings().one()
    return r["balance_cents"], r["captured_cents"], r["refunded_cents"]


async def payment_row(ctx: ServiceContext, order_id: str) -> dict[str, Any] | None:
    async with ctx.db.session() as s:
        query = select(payments).where(payments.c.order_id == order_id)
        row = (await s.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def attempt_rows(ctx: ServiceContext, order_id: str) -> dict[str, tuple[str, int]]:
    """operation -> (idempotency key, provider status) of the calls stored for the order."""
    async with ctx.db.session() as s:
        query = select(attempts).where(attempts.c.order_id == order_id)
        rows = (await s.execute(query)).mappings().all()
    return {r["operation"]: (r["idempotency_key"], r["status"]) for r in rows}


async def saga_events(ctx: ServiceContext) -> list[EventModel]:
    return [e for _, e in await emitted(ctx) if not type(e).__name__.startswith("Funds")]


async def test_a_charge_is_authorised_and_captured_at_the_provider_under_keys_of_the_order(
    paying, provider
):
    ctx, recorder = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    r = reserved(c, 4_200)
    await deliver(ctx, r)

    (event,) = await saga_events(ctx)
    assert isinstance(event, PaymentCaptured) and event.amount_cents == 4_200
    assert await ledger(provider, c) == (4_200, 0)
    assert await books(ctx, c) == (5_800, 4_200, 0)
    stored = await attempt_rows(ctx, r.order_id)
    assert stored == {
        "authorise": (idempotency_key("authorise", r.order_id), 201),
        "capture": (idempotency_key("capture", r.order_id), 200),
    }
    assert [s.idempotency_key for s in recorder.seen] == [
        idempotency_key("authorise", r.order_id),
        idempotency_key("capture", r.order_id),
    ]


async def test_a_capture_answer_lost_after_the_provider_captured_is_retried_under_the_same_key(
    provider, tmp_path, database_url
):
    lossy = Recorder(lose_after="/capture")
    async with payments_with(provider, tmp_path, database_url, lossy) as (ctx, recorder):
        c = customer()
        await deliver(ctx, deposit(c, 10_000))
        r = reserved(c, 4_200)
        await deliver(ctx, r)

        first, second = recorder.to("/capture")
        assert first.idempotency_key == second.idempotency_key
        assert (first.status, first.replayed) == (200, False)  # captured; answer lost
        assert (second.status, second.replayed) == (200, True)  # the first answer again
        assert await ledger(provider, c) == (4_200, 0)  # charged once
        assert [type(e) for e in await saga_events(ctx)] == [PaymentCaptured]


async def test_an_answer_slower_than_the_timeout_leaves_nothing_and_the_redelivery_charges_once(
    provider, tmp_path, database_url
):
    async with payments_with(provider, tmp_path, database_url, timeout_s=0.3, attempts=2) as (
        ctx,
        recorder,
    ):
        c = customer()
        await deliver(ctx, deposit(c, 10_000))
        r = reserved(c, 4_200)
        await provider.faults(latency_ms=1_500)  # longer than the client's timeout
        with pytest.raises(DependencyUnavailable):
            await deliver(ctx, r)
        # The provider authorised (its answer came too late); payments kept nothing.
        assert await payment_row(ctx, r.order_id) is None
        assert await attempt_rows(ctx, r.order_id) == {}
        assert await books(ctx, c) == (10_000, 0, 0)

        await provider.faults(latency_ms=0)
        await deliver(ctx, r)  # the event again, as after the consumer's pause
        assert recorder.to("/v1/authorisations")[-1].replayed  # the first authorisation
        assert await ledger(provider, c) == (4_200, 0)
        assert await books(ctx, c) == (5_800, 4_200, 0)
        assert [type(e) for e in await saga_events(ctx)] == [PaymentCaptured]


async def test_a_charge_whose_transaction_never_committed_charges_once_when_redelivered(
    paying, provider
):
    ctx, recorder = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    r = reserved(c, 4_200)
    await handled_not_committed(ctx, r)
    assert await ledger(provider, c) == (4_200, 0)  # the provider captured ...
    assert await payment_row(ctx, r.order_id) is None  # ... payments never knew

    await deliver(ctx, r)
    assert await ledger(provider, c) == (4_200, 0)
    assert [s.replayed for s in recorder.seen] == [False, False, True, True]
    row = await payment_row(ctx, r.order_id)
    assert row is not None and row["status"] == "CAPTURED"


async def test_a_decline_by_the_provider_becomes_payment_declined_with_its_reason(paying, provider):
    ctx, _ = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    await provider.admin("/admin/declined", {"customers": [c]})
    r = reserved(c, 4_200)
    await deliver(ctx, r)

    (event,) = await saga_events(ctx)
    assert isinstance(event, PaymentDeclined)
    assert event.reason and event.reason != "insufficient funds"
    assert event.balance_cents == 10_000  # the books gave the amount back
    assert await books(ctx, c) == (10_000, 0, 0)
    row = await payment_row(ctx, r.order_id)
    assert row is not None and (row["status"], row["reason"]) == ("DECLINED", event.reason)
    assert await ledger(provider, c) == (0, 0)


async def test_insufficient_funds_are_declined_without_a_call(paying, provider):
    ctx, recorder = paying
    c = customer()
    await deliver(ctx, deposit(c, 100))
    await deliver(ctx, reserved(c, 4_200))

    (event,) = await saga_events(ctx)
    assert isinstance(event, PaymentDeclined) and event.reason == "insufficient funds"
    assert recorder.seen == []


async def test_a_refund_goes_through_the_provider_once(paying, provider):
    ctx, recorder = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    r = reserved(c, 4_200)
    await deliver(ctx, r)
    await deliver(ctx, cancelled(r))
    await deliver(ctx, cancelled(r))  # a second cancellation: refunded already

    assert [type(e) for e in await saga_events(ctx)] == [PaymentCaptured, PaymentRefunded]
    assert await ledger(provider, c) == (4_200, 4_200)
    assert await books(ctx, c) == (10_000, 4_200, 4_200)
    assert len(recorder.to("/refunds")) == 1
    assert (await attempt_rows(ctx, r.order_id))["refund"][1] == 201


async def test_a_cancellation_that_won_over_an_uncommitted_charge_gets_the_money_back(
    paying, provider
):
    ctx, _ = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    r = reserved(c, 4_200)
    await handled_not_committed(ctx, r)  # captured at the provider, unknown here
    await deliver(ctx, cancelled(r))  # the cancellation comes first: a tombstone
    await deliver(ctx, r)  # the charge again: resolved through the provider, not skipped

    assert await saga_events(ctx) == []
    assert await ledger(provider, c) == (4_200, 4_200)  # captured, then refunded
    assert await books(ctx, c) == (10_000, 0, 0)


async def test_a_cancellation_before_any_charge_leaves_the_provider_with_nothing(paying, provider):
    ctx, recorder = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    r = reserved(c, 4_200)
    await deliver(ctx, cancelled(r))
    await deliver(ctx, r)

    assert await saga_events(ctx) == []
    assert await ledger(provider, c) == (0, 0)
    # Asked again under the authorisation's key, then released.
    assert [s.path.rsplit("/", 1)[-1] for s in recorder.seen] == ["authorisations", "void"]


async def test_while_the_provider_is_down_the_event_is_unavailable_and_nothing_is_kept(
    paying, provider
):
    ctx, _ = paying
    c = customer()
    await deliver(ctx, deposit(c, 10_000))
    await provider.faults(down=True)
    r = reserved(c, 4_200)
    with pytest.raises(DependencyUnavailable) as raised:
        await deliver(ctx, r)
    assert raised.value.dependency == "provider"
    assert await payment_row(ctx, r.order_id) is None
    assert await saga_events(ctx) == []
    assert await books(ctx, c) == (10_000, 0, 0)


# --- payments killed between the provider's answer and its commit -------------------------


async def test_payments_killed_after_the_provider_captured_charges_once_after_restart(
    kafka_bootstrap: str, provider: StandIn, tmp_path: Path, database_url: Callable[[str], str]
):
    prefix = unique("killpay") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    kafka = KafkaConnection(kafka_bootstrap)
    await apply_topics(kafka, list(catalogue.topics.values()))
    codec = AvroCodec(catalogue)
    (port,) = free_ports(1)
    spec = ProcessSpec("payments", "services.payments", port)
    var_dir = tmp_path / "var"
    url = database_url("payments")
    env = {
        "TOPIC_PREFIX": prefix,
        "PAYMENTS_DATABASE_URL": url,
        "PAYMENT_PROVIDER_URL": provider.url,
        "PAYMENT_PROVIDER_TIMEOUT_S": "30",  # it waits out the provider's latency
    }
    db = Database(url)
    provider_db = Database(provider.database_url)
    c = customer()
    r = reserved(c, 4_200)
    try:
        start([spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env)
        await asyncio.to_thread(wait_ready, [spec], var_dir=var_dir, deadline_s=60)
        funds = deposit(c, 10_000)
        await publish(codec, kafka, [Draft("FundsDeposited", funds.model_dump(), c)])
        await eventually(lambda: _captured(db, c, 0), deadline_s=30, what="the deposit")

        # Every answer waits 3 s after its effect: the authorisation's, then the capture's.
        await provider.faults(latency_ms=3_000)
        await publish(codec, kafka, [Draft("StockReserved", r.model_dump(), r.order_id)])
        # The capture is committed at the provider while payments still waits for its
        # answer: kill payments there.
        # Its /v1 reads wait too: look in its database.
        await eventually(lambda: _provider_captured(provider_db, c), deadline_s=60, what="capture")
        stop([spec], var_dir=var_dir, kill=True)
        assert await _captured(db, c, 0)  # payments never committed it

        await provider.faults(latency_ms=0)
        start([spec], var_dir=var_dir, bootstrap=kafka_bootstrap, env=env)
        await eventually(lambda: _captured(db, c, 4_200), deadline_s=60, what="the payment")
        assert await ledger(provider, c) == (4_200, 0)  # charged once
        async with db.session() as s:
            kinds = (
                await s.execute(select(outbox.c.event_type).where(outbox.c.key == r.order_id))
            ).scalars()
            assert list(kinds) == ["PaymentCaptured"]
    finally:
        stop([spec], var_dir=var_dir, kill=True)
        await db.dispose()
        await provider_db.dispose()


async def _captured(db: Database, customer_id: str, cents: int) -> bool:
    """Whether payments' books hold the customer with ``cents`` captured."""
    try:
        async with db.session() as s:
            query = select(accounts.c.captured_cents).where(accounts.c.customer_id == customer_id)
            return (await s.execute(query)).scalar() == cents
    except Exception:  # the tables are not there until the service made them
        return False


async def _provider_captured(db: Database, customer_id: str) -> bool:
    async with db.session() as s:
        query = select(captures.c.capture_id).where(captures.c.customer_id == customer_id)
        return (await s.execute(query)).first() is not None
