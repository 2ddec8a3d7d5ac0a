"""All five saga services and the query service in this test process (same event loop),
against the real broker, each run by the platform's own component loop.

Used where a test must see inside every service at once: spans collected in memory, log
lines captured. The e2e suite runs the same services as separate OS processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.components import run_components
from events.kafka import KafkaConnection
from events.service import Service, ServiceContext, ServiceSettings, build_app, prepare
from events.topics import apply_topics
from services.inventory.app import SERVICE as INVENTORY
from services.inventory.app import Settings as InventorySettings
from services.notifications.app import SERVICE as NOTIFICATIONS
from services.notifications.app import Settings as NotificationsSettings
from services.orders.app import Settings as OrdersSettings
from services.orders.app import build_service as orders_service
from services.payments.app import SERVICE as PAYMENTS
from services.payments.app import Settings as PaymentsSettings
from services.query.app import Settings as QuerySettings
from services.query.app import build_service as query_service
from services.shipping.app import Settings as ShippingSettings
from services.shipping.app import build_service as shipping_service
from tests.tokens import operator_headers


@dataclass
class InProcess:
    codec: AvroCodec
    contexts: dict[str, ServiceContext]
    clients: dict[str, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def saga_in_process(
    bootstrap: str, tmp: Path, prefix: str, database_url: Callable[[str], str]
) -> AsyncIterator[InProcess]:
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(bootstrap), list(catalogue.topics.values()))

    def settings(cls: type[ServiceSettings], name: str) -> ServiceSettings:
        return cls(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            var_dir=tmp,
            database_url=f"sqlite+aiosqlite:///{tmp / name}.db",
            http_port=0,
        )

    ship_settings = settings(ShippingSettings, "shipping")
    assert isinstance(ship_settings, ShippingSettings)
    orders_settings = settings(OrdersSettings, "orders")
    assert isinstance(orders_settings, OrdersSettings)
    query_settings = settings(QuerySettings, "query")
    assert isinstance(query_settings, QuerySettings)
    services: list[tuple[Service, ServiceSettings]] = [
        (orders_service(orders_settings), orders_settings),
        (INVENTORY, settings(InventorySettings, "inventory")),
        (PAYMENTS, settings(PaymentsSettings, "payments")),
        (shipping_service(ship_settings), ship_settings),
        (NOTIFICATIONS, settings(NotificationsSettings, "notifications")),
        (query_service(query_settings), query_settings),
    ]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    contexts: dict[str, ServiceContext] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for service, cfg in services:
            ctx = await prepare(service, cfg)
            contexts[service.name] = ctx
            run = run_components(service.name, ctx.components, stop, cfg.shutdown_timeout_s)
            tasks.append(asyncio.create_task(run))
            clients[service.name] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=build_app(service, ctx)),
                base_url="http://localhost",
                headers=operator_headers(),
            )
        yield InProcess(AvroCodec(catalogue), contexts, clients)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
        for ctx in contexts.values():
            await ctx.db.dispose()
