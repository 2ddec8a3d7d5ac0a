"""Helpers for the query service's integration tests (this module holds no tests).

``QueryEnv``: an isolated environment on the session's broker (a random ``TOPIC_PREFIX``
with the catalogue's topics, a fresh SQLite file) running the query projection and its API
in this process, read through httpx's ASGI transport. ``Saga`` writes orders down every path
of the saga as the services would emit them (envelopes linked by causation and correlation)
and publishes them with ``events.publisher.publish``, one call per emitting service, so the
projection sees the topics in an order no live run would produce.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.components import run_components
from events.kafka import KafkaConnection
from events.publisher import Draft, Published, publish
from events.service import ServiceContext, build_app, prepare
from events.topics import apply_topics
from services.query.api import ReadSide
from services.query.app import Settings, build_service
from tests.support import eventually, unique
from tests.tokens import operator_headers

pytestmark = pytest.mark.integration

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class QueryEnv:
    bootstrap: str
    prefix: str
    codec: AvroCodec
    settings: Settings
    ctx: ServiceContext
    side: ReadSide
    app: FastAPI
    http: httpx.AsyncClient
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def runner(self) -> Any:
        return self.side.runner

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get("/api/v1" + path, params=params)

    async def caught_up(self, published: Sequence[Published], deadline_s: float = 30) -> None:
        positions = {(p.topic, p.partition): p.offset for p in published}

        def applied() -> bool:
            return all(
                self.runner.positions.get(_tp(t, p), 0) > o for (t, p), o in positions.items()
            )

        await eventually(applied, deadline_s=deadline_s, what="the projection to apply them")


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)


def min_position(published: Sequence[Published]) -> str:
    """The read-your-writes parameter for what was published (the last offset per partition)."""
    last: dict[tuple[str, int], int] = {}
    for p in published:
        last[(p.topic, p.partition)] = max(last.get((p.topic, p.partition), -1), p.offset)
    return ",".join(f"{t}:{p}:{o}" for (t, p), o in last.items())


async def start_env(bootstrap: str, database_url: str, prefix: str | None = None) -> QueryEnv:
    prefix = prefix or unique("q") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(bootstrap), list(catalogue.topics.values()))
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        database_url=database_url,
        http_port=0,
    )
    service = build_service(settings)
    ctx = await prepare(service, settings)
    side: ReadSide = ctx.extras["read_side"]
    app = build_app(service, ctx)
    stop = asyncio.Event()
    # The service's own loop (start-up retry, shutdown, closing), without its HTTP server.
    task = asyncio.create_task(run_components("query", ctx.components, stop, 30))
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://localhost",
        headers=operator_headers(),
    )
    env = QueryEnv(bootstrap, prefix, ctx.codec, settings, ctx, side, app, http, stop, task)
    await eventually(side.runner.started.is_set, deadline_s=60, what="the runner to start")
    return env


async def stop_env(env: QueryEnv) -> None:
    env.stop.set()
    await asyncio.wait_for(env.task, 30)  # the components closed, the read side's too
    await env.http.aclose()
    await env.ctx.db.dispose()


@pytest.fixture
async def query_env(
    kafka_bootstrap: str, database_url: Callable[[str], str]
) -> AsyncIterator[QueryEnv]:
    """SQLite, or PostgreSQL with CHOREO_TEST_DB=postgres (see tests/conftest.py)."""
    env = await start_env(kafka_bootstrap, database_url("query"))
    try:
        yield env
    finally:
        await stop_env(env)


# --- saga histories ---------------------------------------------------------------------------

PATHS = ("success", "out of stock", "insufficient funds", "unserviceable address", "cancelled")
# path -> (status, failed step, payment status, shipment status, stock status)
OUTCOMES = {
    "success": ("COMPLETED", None, "CAPTURED", "SCHEDULED", "SHIPPED"),
    "out of stock": ("REJECTED", "inventory", None, None, "REJECTED"),
    "insufficient funds": ("CANCELLED", "payments", "DECLINED", None, "RELEASED"),
    "unserviceable address": ("CANCELLED", "shipping", "REFUNDED", "FAILED", "RELEASED"),
    "cancelled": ("CANCELLED", None, None, None, "RELEASED"),
}


@dataclass
class Sent:
    """One event as a service would have emitted it."""

    producer: str
    draft: Draft

    @property
    def event_id(self) -> str:
        assert self.draft.event_id is not None
        return self.draft.event_id


@dataclass
class Order:
    order_id: str
    path: str
    customer_id: str
    lines: list[dict[str, Any]]
    total_cents: int
    events: list[Sent] = field(default_factory=list)


@dataclass
class Saga:
    """Orders down the saga's paths; ``drafts_by_producer`` publishes them."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    sent: list[Sent] = field(default_factory=list)
    orders: dict[str, Order] = field(default_factory=dict)

    def sku(self, name: str) -> str:
        return f"sku-{self.run}-{name}"

    def customer(self, name: str) -> str:
        return f"cust-{self.run}-{name}"

    def emit(
        self,
        producer: str,
        event_type: str,
        payload: dict[str, Any],
        key: str,
        at: datetime,
        cause: Sent | None = None,
    ) -> Sent:
        event_id = str(uuid.uuid4())
        correlation = cause.draft.correlation_id if cause else event_id
        draft = Draft(
            event_type,
            payload,
            key,
            event_id=event_id,
            correlation_id=correlation,
            causation_id=cause.event_id if cause else None,
            occurred_at=at,
        )
        sent = Sent(producer, draft)
        self.sent.append(sent)
        return sent

    def restock(
        self, sku: str, quantity: int, restock_id: str | None = None, at: datetime = T0
    ) -> Sent:
        payload = {
            "restock_id": restock_id or str(uuid.uuid4()),
            "sku": sku,
            "quantity": quantity,
            "restocked_at": at,
            "received_at": at,
        }
        # Inventory's fact of a counted restock: what the query projection reads.
        return self.emit("inventory", "StockReceived", payload, sku, at)

    def deposit(
        self, customer: str, cents: int, deposit_id: str | None = None, at: datetime = T0
    ) -> Sent:
        payload = {
            "deposit_id": deposit_id or str(uuid.uuid4()),
            "customer_id": customer,
            "amount_cents": cents,
            "deposited_at": at,
            "credited_at": at,
        }
        # Payments' fact of a credited deposit: what the query projection reads.
        return self.emit("payments", "FundsCredited", payload, customer, at)

    def order(
        self,
        path: str,
        customer: str,
        lines: Sequence[tuple[str, int, int]],
        at: datetime = T0,
        step: timedelta = timedelta(seconds=1),
    ) -> Order:
        """An order down ``path``; step k happens at ``at + k * step``."""
        order_id = str(uuid.uuid4())
        body = [{"sku": s, "quantity": q, "unit_price_cents": p} for s, q, p in lines]
        total = sum(q * p for _, q, p in lines)
        order = Order(order_id, path, customer, body, total)
        self.orders[order_id] = order
        stock = [{"sku": s, "quantity": q} for s, q, _ in lines]
        base = {"order_id": order_id, "customer_id": customer}

        def emit(
            producer: str, event_type: str, extra: dict[str, Any], k: int, cause: Sent | None
        ) -> Sent:
            sent = self.emit(
                producer, event_type, {**base, **extra}, order_id, at + k * step, cause
            )
            order.events.append(sent)
            return sent

        created = emit(
            "orders",
            "OrderCreated",
            {"lines": body, "total_cents": total, "shipping_address": ADDRESS, "created_at": at},
            0,
            None,
        )
        t = lambda k: at + k * step  # noqa: E731
        if path == "out of stock":
            short = {"sku": stock[0]["sku"], "requested": stock[0]["quantity"], "available": 0}
            rejected = emit(
                "inventory",
                "StockRejected",
                {"reason": "insufficient stock", "shortages": [short], "rejected_at": t(1)},
                1,
                created,
            )
            end = emit(
                "orders",
                "OrderRejected",
                {"reason": "insufficient stock", "failed_step": "inventory", "rejected_at": t(2)},
                2,
                rejected,
            )
            status = "REJECTED"
        else:
            reserved = emit(
                "inventory",
                "StockReserved",
                {
                    "lines": stock,
                    "total_cents": total,
                    "shipping_address": ADDRESS,
                    "reserved_at": t(1),
                },
                1,
                created,
            )
            if path == "cancelled":
                end = emit(
                    "orders",
                    "OrderCancelled",
                    {"reason": "changed my mind", "failed_step": None, "cancelled_at": t(2)},
                    2,
                    reserved,
                )
                emit(
                    "inventory",
                    "StockReleased",
                    {
                        "lines": stock,
                        "reason": "changed my mind",
                        "failed_step": None,
                        "released_at": t(3),
                    },
                    3,
                    end,
                )
            elif path == "insufficient funds":
                declined = emit(
                    "payments",
                    "PaymentDeclined",
                    {
                        "amount_cents": total,
                        "reason": "insufficient funds",
                        "balance_cents": 7,
                        "declined_at": t(2),
                    },
                    2,
                    reserved,
                )
                emit(
                    "inventory",
                    "StockReleased",
                    {
                        "lines": stock,
                        "reason": "insufficient funds",
                        "failed_step": "payments",
                        "released_at": t(3),
                    },
                    3,
                    declined,
                )
                end = emit(
                    "orders",
                    "OrderCancelled",
                    {
                        "reason": "insufficient funds",
                        "failed_step": "payments",
                        "cancelled_at": t(3),
                    },
                    3,
                    declined,
                )
            else:
                payment_id = str(uuid.uuid4())
                captured = emit(
                    "payments",
                    "PaymentCaptured",
                    {
                        "payment_id": payment_id,
                        "amount_cents": total,
                        "shipping_address": ADDRESS,
                        "captured_at": t(2),
                    },
                    2,
                    reserved,
                )
                if path == "unserviceable address":
                    failed = emit(
                        "shipping",
                        "ShipmentFailed",
                        {"reason": "address not serviceable", "failed_at": t(3)},
                        3,
                        captured,
                    )
                    refunded = emit(
                        "payments",
                        "PaymentRefunded",
                        {
                            "payment_id": payment_id,
                            "amount_cents": total,
                            "reason": "address not serviceable",
                            "failed_step": "shipping",
                            "refunded_at": t(4),
                        },
                        4,
                        failed,
                    )
                    emit(
                        "inventory",
                        "StockReleased",
                        {
                            "lines": stock,
                            "reason": "address not serviceable",
                            "failed_step": "shipping",
                            "released_at": t(5),
                        },
                        5,
                        refunded,
                    )
                    end = emit(
                        "orders",
                        "OrderCancelled",
                        {
                            "reason": "address not serviceable",
                            "failed_step": "shipping",
                            "cancelled_at": t(4),
                        },
                        4,
                        failed,
                    )
                else:
                    shipment_id = str(uuid.uuid4())
                    scheduled = emit(
                        "shipping",
                        "ShipmentScheduled",
                        {
                            "shipment_id": shipment_id,
                            "carrier": "DHL",
                            "shipping_address": ADDRESS,
                            "scheduled_at": t(3),
                        },
                        3,
                        captured,
                    )
                    end = emit(
                        "orders",
                        "OrderCompleted",
                        {"total_cents": total, "shipment_id": shipment_id, "completed_at": t(4)},
                        4,
                        scheduled,
                    )
            status = OUTCOMES[path][0]
        emit(
            "notifications",
            "CustomerNotified",
            {
                "notification_id": str(uuid.uuid4()),
                "order_status": status,
                "message": "hello",
                "notified_at": t(9),
            },
            9,
            end,
        )
        return order

    def cut(self, order: Order, keep: int) -> Order:
        """Keeps the order's first ``keep`` events only: a saga still under way."""
        dropped = {s.event_id for s in order.events[keep:]}
        del order.events[keep:]
        self.sent = [s for s in self.sent if s.event_id not in dropped]
        return order

    def stuck(
        self,
        order: Order,
        waiting_on: str,
        at: datetime,
        since: datetime = T0,
        deadline_at: datetime | None = None,
    ) -> Sent:
        """orders' report that ``order`` is stuck at ``waiting_on``, detected ``at``."""
        payload = {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "waiting_on": waiting_on,
            "waiting_since": since,
            "deadline_at": deadline_at or at,
            "detected_at": at,
        }
        first = order.events[0] if order.events else None
        sent = self.emit("orders", "OrderStuck", payload, order.order_id, at)
        if first is not None:  # in the saga's correlation, as the watchdog writes it
            sent.draft = dataclasses.replace(sent.draft, correlation_id=first.draft.correlation_id)
        order.events.append(sent)
        return sent

    def drafts_by_producer(self, sent: Sequence[Sent] | None = None) -> dict[str, list[Draft]]:
        out: dict[str, list[Draft]] = {}
        for s in self.sent if sent is None else sent:
            out.setdefault(s.producer, []).append(s.draft)
        return out


@dataclass
class Bus:
    """Where to publish: a broker and the environment's (prefixed) codec."""

    bootstrap: str
    codec: AvroCodec


async def publish_saga(
    to: QueryEnv | Bus, saga: Saga, sent: Sequence[Sent] | None = None
) -> list[Published]:
    """Publishes the saga's events (or ``sent``), one publish call per emitting service."""
    out: list[Published] = []
    for producer, drafts in saga.drafts_by_producer(sent).items():
        out += await publish(to.codec, KafkaConnection(to.bootstrap), drafts, producer=producer)
    return out
