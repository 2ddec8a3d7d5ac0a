"""The ``query`` projection: one runner over every saga topic the read side needs.

Its events are collected per batch without I/O (``collect``) and written just before the
batch's transaction commits (``batch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from events.models import EventModel
from events.projection import Projection
from schemas.models import ALL_EVENTS
from services.query.batch import flush_building, write_batch
from services.query.collect import COLLECT, KeptOrders, collect_events
from services.query.tables import define_tables

NAME: Final = "query"
TOPICS: Final = (
    "orders.events",
    "inventory.events",
    "payments.events",
    "shipping.events",
    "notifications.events",
)


def build_projection(prefix: str = "") -> Projection:
    """The projection over the topics of one environment (``TOPIC_PREFIX``)."""
    projection = Projection(
        NAME,
        [prefix + t for t in TOPICS],
        define_tables,
        flush_building=flush_building,
        reader_collector=KeptOrders,  # every order event is keyed by its order id
    )
    models: list[type[EventModel]] = [ALL_EVENTS[name] for name in COLLECT]
    projection.on_batch(models, collect_events, write_batch)
    return projection


# Every projection the replay command can rebuild, by name.
PROJECTIONS: Final[dict[str, Callable[[str], Projection]]] = {NAME: build_projection}
