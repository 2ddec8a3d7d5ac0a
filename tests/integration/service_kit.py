"""Driving one service's handlers without a broker: a fresh SQLite database per test, the
real codec and outbox, each event handled in its own unit of work as the consumer runtime
would, and an in-process HTTP client for the read side.

A test module declares its context fixture with :func:`service_fixture` and then passes
the :class:`~events.service.ServiceContext` it yields to :func:`deliver`,
:func:`emitted`, :func:`outbox_records` and :func:`http_client`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from events.codec import Decoded
from events.db import sqlite_url
from events.envelope import Envelope, Event, utcnow
from events.models import EventModel
from events.outbox import UnitOfWork
from events.service import Service, ServiceContext, ServiceSettings, build_app, build_context
from events.tables import metadata as platform_metadata
from events.tables import outbox
from schemas.models import ALL_EVENTS, SkuPriced
from tests.tokens import operator_headers

ServiceSource = Service | Callable[[Any], Service]
"""A service, or the function that builds it from its settings (as shipping's does)."""

_offsets = itertools.count()


@contextlib.asynccontextmanager
async def open_service(
    service: ServiceSource,
    settings_type: type[ServiceSettings],
    tmp_path: Path,
    database_url: str | None = None,
    **settings: Any,
) -> AsyncIterator[ServiceContext]:
    """The service's context over a new database (SQLite in ``tmp_path`` unless a URL is
    given), tables created, topics unprefixed; ``settings`` override other settings."""
    config = settings_type(
        database_url=database_url or sqlite_url(tmp_path / "service.db"),
        var_dir=tmp_path,
        topic_prefix="",
        **settings,
    )
    built = service if isinstance(service, Service) else service(config)
    ctx = build_context(built, config)
    ctx.extras["service"] = built
    await ctx.db.create_all(platform_metadata, built.metadata)
    try:
        yield ctx
    finally:
        await ctx.db.dispose()


def service_fixture(
    service: ServiceSource,
    settings_type: type[ServiceSettings],
    *,
    name: str = "ctx",
    **settings: Any,
) -> Any:
    """A pytest fixture called ``name`` yielding :func:`open_service`'s context, e.g.
    ``ctx = service_fixture(SERVICE, Settings)`` at a test module's top level."""

    @pytest.fixture(name=name)
    async def context(
        tmp_path: Path, database_url: Callable[[str], str]
    ) -> AsyncIterator[ServiceContext]:
        url = database_url("service")
        async with open_service(service, settings_type, tmp_path, url, **settings) as ctx:
            yield ctx

    return context


def service_of(ctx: ServiceContext) -> Service:
    service: Service = ctx.extras["service"]
    return service


def event_for(ctx: ServiceContext, payload: EventModel, event_id: str | None = None) -> Event[Any]:
    """``payload`` as the consumer hands it to a handler: in a new envelope keyed by its
    order, SKU or customer, on its topic, at an offset of its own."""
    env = Envelope(
        event_id=event_id or str(uuid.uuid4()),
        event_type=payload.event_type,
        schema_version=1,
        occurred_at=utcnow(),
        producer="test",
        correlation_id=str(uuid.uuid4()),
        key=str(
            getattr(payload, "order_id", "")
            or getattr(payload, "sku", "")
            or getattr(payload, "customer_id", "")
        ),
    )
    topic = ctx.codec.catalogue.topic_for(payload.event_type)
    return Event(env, payload, topic, 0, next(_offsets))


async def deliver(
    ctx: ServiceContext, payload: EventModel, event_id: str | None = None
) -> Envelope:
    """Runs the registered handler in one unit of work, as the consumer runtime does; returns
    the envelope it was delivered in (the cause of whatever the handler emits)."""
    event = event_for(ctx, payload, event_id)
    await _handle(ctx, event, commit=True)
    return event.envelope


async def handled_not_committed(ctx: ServiceContext, payload: EventModel) -> None:
    """The handler runs in a unit of work that never commits: the service died after the
    handler's calls out (a stand-in acted) and before its own commit (rolled back)."""
    await _handle(ctx, event_for(ctx, payload), commit=False)


async def _handle(ctx: ServiceContext, event: Event[Any], *, commit: bool) -> None:
    handler = service_of(ctx).router.handlers[event.envelope.event_type].fn
    async with UnitOfWork(ctx.db, ctx.outbox, cause=event.envelope) as uow:
        await handler(uow, event)
        if commit:
            await uow.commit()


async def set_prices(ctx: ServiceContext, prices: Mapping[str, int]) -> None:
    """Gives the orders service ``ctx`` the platform's unit price of each SKU, as inventory's
    SkuPriced facts (orders prices every order from them; an unknown SKU is a 422)."""
    for sku, cents in prices.items():
        priced = SkuPriced(
            sku=sku, unit_price_cents=cents, restock_id=str(uuid.uuid4()), priced_at=utcnow()
        )
        await deliver(ctx, priced)


async def _outbox_rows(ctx: ServiceContext) -> list[tuple[Any, Decoded]]:
    """Every outbox row with its payload decoded by the codec, in write order."""
    async with ctx.db.session() as s:
        rows = (await s.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
    out = []
    for row in rows:
        decoded = ctx.codec.decode(row["payload"])
        assert decoded.event_type == row["event_type"]
        out.append((row, decoded))
    return out


async def emitted(ctx: ServiceContext) -> list[tuple[str, EventModel]]:
    """(key, payload model) of every outbox row, in write order; each row must be bound for
    the service's own ``<name>.events`` topic."""
    out = []
    for row, decoded in await _outbox_rows(ctx):
        assert row["topic"] == f"{ctx.name}.events"
        out.append((row["key"], ALL_EVENTS[row["event_type"]].model_validate(decoded.payload)))
    return out


async def outbox_records(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Every outbox row as one flat dict, in write order: its ``type``, ``topic``, ``key``,
    ``cause`` (causation-id header) and the decoded payload's fields."""
    return [
        {
            "type": row["event_type"],
            "topic": row["topic"],
            "key": row["key"],
            "cause": json.loads(row["headers"]).get("causation-id"),
            **decoded.payload,
        }
        for row, decoded in await _outbox_rows(ctx)
    ]


@contextlib.asynccontextmanager
async def http_client(
    ctx: ServiceContext, base_url: str = "http://localhost"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the service's app in process (no server, no port), with an
    operator's token (every scope)."""
    transport = httpx.ASGITransport(app=build_app(service_of(ctx), ctx))
    headers = operator_headers()
    async with httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as http:
        yield http
