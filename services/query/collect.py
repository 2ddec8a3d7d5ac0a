"""What a batch of the query projection's events changes, collected without I/O.

Each event becomes a partial order view (``patches``, joined by ``domain``'s rules) plus a
timeline row, or a credited deposit or received restock (the owners' facts, never the
requests), folded into a ``Batch`` (``collect_events``, the projection's ``collect``);
``Batch.write_to`` later joins it with what a ``Store`` holds and saves the result
(``services.query.batch`` has the SQL store and the transaction hook). Every value comes
from the events (their own times, never the clock), so a replay rebuilds the very same rows.

No SQLAlchemy and no service code here: a replay's reader processes import this module to
collect, and start faster for not importing the rest of the service (a reader that hands
its rows over in a file uses the standard library's sqlite3, see ``handover``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Protocol

from events.envelope import Event
from services.query.domain import View, iso, join_into
from services.query.figures import (
    Customer,
    Decline,
    Folded,
    Money,
    Sku,
    Stock,
    apply_money,
    apply_stock,
    later_decline,
    money_changes,
    stock_changes,
)
from services.query.handover import Handover, RowsFile
from services.query.patches import ORDER_EVENTS, Payload
from services.query.rows import created_then_id, order_row

# A table's rows in its column order: in memory, or in a file a replay reader handed over.
Rows = list[tuple[Any, ...]] | RowsFile


class Batch:
    """What one transaction's events change, collected by the handlers (pure, pickles)."""

    def __init__(self) -> None:
        self.orders: dict[str, View] = {}
        self.timeline: dict[str, tuple[Any, ...]] = {}  # event id -> row
        self.deposits: dict[str, tuple[str, int]] = {}  # deposit id -> (customer, cents)
        self.restocks: dict[str, tuple[str, int]] = {}  # restock id -> (sku, quantity)
        self.money_at: dict[str, str] = {}  # customer -> latest time of a money event
        self.declines: dict[str, Decline] = {}  # customer -> latest decline
        # From a replay reader that keeps its orders (``KeptOrders``): its number, and at
        # its end the rows of the orders it kept and what they add per customer and SKU.
        self.reader: int | None = None
        self.rows: Rows = []
        # A reader that hands its rows over in a file (``handover``): the batch's timeline
        # rows there, and the orders they belong to (for the writer's ``claim``).
        self.timeline_file: RowsFile | None = None
        self.order_ids: set[str] = set()
        self.rows_money: dict[str, Money] = {}
        self.rows_stock: dict[str, Stock] = {}

    # --- collecting (called by the handlers) ------------------------------------------------

    def order(self, order_id: str, patch: dict[str, Any], timeline_row: tuple[Any, ...]) -> None:
        join_into(self.orders, order_id, patch)
        self.timeline.setdefault(timeline_row[1], timeline_row)

    def money(self, customer_id: str, at: str) -> None:
        last = self.money_at.get(customer_id)
        if last is None or at > last:
            self.money_at[customer_id] = at

    def decline(self, customer_id: str, decline: Decline) -> None:
        last = self.declines.get(customer_id)
        self.declines[customer_id] = (
            decline if last is None else later_decline(last, decline) or last
        )

    def deposit(self, deposit_id: str, customer_id: str, cents: int, at: str) -> None:
        self.deposits.setdefault(deposit_id, (customer_id, cents))
        self.money(customer_id, at)

    def restock(self, restock_id: str, sku: str, quantity: int) -> None:
        self.restocks.setdefault(restock_id, (sku, quantity))

    # --- writing (just before the commit) ----------------------------------------------------

    def write_to(self, store: Store) -> None:
        """Loads what the batch touches, joins, and saves what changed."""
        timeline: Rows = list(self.timeline.values())
        if self.timeline_file is not None:
            timeline = self.timeline_file
        if self.reader is not None:
            store.claim(
                self.reader, self.order_ids or set(map(itemgetter(0), self.timeline.values()))
            )
        folded = store.join_orders(self.orders)
        money, stock = folded.money, folded.stock
        for customer_id, part in self.rows_money.items():
            money.setdefault(customer_id, Money()).add(part)
        for sku, held in self.rows_stock.items():
            stock.setdefault(sku, Stock()).add(held)
        seen = store.deposits_seen(self.deposits)
        deposits = [(k, c, n) for k, (c, n) in self.deposits.items() if k not in seen]
        for _, customer_id, cents in deposits:
            money.setdefault(customer_id, Money()).deposited += cents
        seen = store.restocks_seen(self.restocks)
        restocks = [(k, s, q) for k, (s, q) in self.restocks.items() if k not in seen]
        for _, sku, quantity in restocks:
            stock.setdefault(sku, Stock()).received += quantity
        store.save(
            Changes(
                orders=folded.changed,
                rows=self.rows,
                timeline=timeline,
                deposits=deposits,
                restocks=restocks,
                customers=customers_after(store, money, self.money_at, self.declines),
                skus=skus_after(store, stock),
            )
        )


def customers_after(
    store: Store,
    money: dict[str, Money],
    money_at: dict[str, str] | None = None,
    declines: dict[str, Decline] | None = None,
) -> list[Customer]:
    """The customers that money changes, money times or declines change, as changed."""
    money_at, declines = money_at or {}, declines or {}
    keys = set(money) | set(money_at) | set(declines)
    stored = store.customers(keys)
    out = []
    for customer_id in keys:
        old = stored.get(customer_id)
        new = apply_money(
            old or Customer(customer_id),
            money.get(customer_id),
            money_at.get(customer_id),
            declines.get(customer_id),
        )
        if new != old:
            out.append(new)
    return out


def skus_after(store: Store, stock: dict[str, Stock]) -> list[Sku]:
    stored = store.skus(stock)
    return [apply_stock(stored.get(k) or Sku(k), d) for k, d in stock.items()]


@dataclass(slots=True)
class Changes:
    """What a batch saves, per table."""

    orders: dict[str, View]  # the joined views that changed
    rows: Rows  # whole order rows a replay reader made
    timeline: Rows
    deposits: list[tuple[str, str, int]]  # (deposit id, customer, cents) not seen before
    restocks: list[tuple[str, str, int]]  # (restock id, SKU, quantity) not seen before
    customers: list[Customer]  # as changed
    skus: list[Sku]  # as changed


class Store(Protocol):
    """Where a batch reads the rows it touches and saves what changed."""

    def join_orders(self, patches: dict[str, View]) -> Folded:
        """Joins a batch's patches into the stored views: what changed, and what the changes
        add per customer and SKU (``figures.fold``; a store may defer the figures)."""
        ...

    def claim(self, reader: int, order_ids: set[str]) -> None:
        """Notes that these orders' events came from that replay reader; raises
        ``NotCoPartitioned`` if another reader had some of them."""
        ...

    def customers(self, keys: Iterable[str]) -> dict[str, Customer]: ...
    def skus(self, keys: Iterable[str]) -> dict[str, Sku]: ...
    def deposits_seen(self, keys: Iterable[str]) -> set[str]: ...
    def restocks_seen(self, keys: Iterable[str]) -> set[str]: ...

    def save(self, changes: Changes) -> None: ...


def order_event(batch: Batch, event: Event[Payload]) -> None:
    """An order's event: its patch of the order's view and its timeline row."""
    env = event.envelope
    at = iso(env.occurred_at)
    p = event.payload
    order_id = p["order_id"]
    patch = ORDER_EVENTS[env.event_type](p, event, batch)
    patch["updated_at"] = at
    row = (  # in the timeline table's column order
        order_id,
        env.event_id,
        env.event_type,
        env.producer,
        at,
        env.causation_id,
        env.correlation_id,
        env.traceparent,
        event.topic,
        event.partition,
        event.offset,
    )
    batch.order(order_id, patch, row)


def funds_credited(batch: Batch, event: Event[Payload]) -> None:
    # Payments' fact, not the FundsDeposited request: a request payments refused (negative,
    # overflowing) or had credited already under another event id has no fact.
    p = event.payload
    batch.deposit(p["deposit_id"], p["customer_id"], p["amount_cents"], iso(p["credited_at"]))


def stock_received(batch: Batch, event: Event[Payload]) -> None:
    # Inventory's fact, not the StockRestocked request (see ``funds_credited``).
    p = event.payload
    batch.restock(p["restock_id"], p["sku"], p["quantity"])


COLLECT: Final[dict[str, Callable[[Batch, Event[Payload]], None]]] = {
    **dict.fromkeys(ORDER_EVENTS, order_event),
    "FundsCredited": funds_credited,
    "StockReceived": stock_received,
}


def collect(batch: Batch, event: Event[Payload]) -> None:
    """What one event adds to its transaction's batch (written just before the commit)."""
    COLLECT[event.event_type](batch, event)


def collect_events(events: list[Event[Payload]], orders: dict[str, View] | None = None) -> Batch:
    """A batch of events folded in memory (the projection's ``collect``: no I/O, pickles);
    its order views joined into ``orders`` when given."""
    batch = Batch()
    if orders is not None:
        batch.orders = orders
    collectors = COLLECT
    for event in events:
        collectors[event.envelope.event_type](batch, event)
    return batch


# Orders a replay reader keeps in memory (about 1 KB each); past that it hands on what it
# holds as partial views, as ``collect_events`` does for every batch.
KEPT_ORDERS_LIMIT: Final = 200_000


class KeptOrders:
    """A replay reader's collect (``events.reading.Collector``) when each reader holds every
    event of its orders: it keeps each order's view across batches, and once it has read
    its share makes the orders' rows and what they add per customer and SKU itself, in
    parallel with the other readers, so the replay's writer neither joins an order per
    batch that touches it nor builds its row in the flush everyone waits for. Each batch
    carries the reader's number: the writer checks that no order comes from two readers.
    Given a scratch directory (a replay into SQLite), it writes each batch's timeline rows
    and at the end its orders' rows into a file of its own instead of sending them."""

    def __init__(self, reader: int, scratch: str | None = None) -> None:
        self.reader = reader
        # Given a scratch directory, the rows go to the writer in a file (``handover``).
        self.handover = None if scratch is None else Handover(Path(scratch, f"reader-{reader}.db"))
        self.views: dict[str, View] = {}
        self.handed_on: set[str] = set()  # orders past the limit: sent as partial views

    def __call__(self, events: list[Event[Payload]]) -> Batch:
        batch = collect_events(events, self.views)  # folded straight into the kept views
        batch.reader = self.reader
        if self.handover is not None:
            rows = list(batch.timeline.values())
            batch.timeline = {}
            batch.timeline_file = self.handover.append("timeline", rows)
            batch.order_ids = set(map(itemgetter(0), rows))
        views, handed_on = self.views, self.handed_on
        batch.orders = {}
        if handed_on:
            for order_id in handed_on.intersection(views):
                batch.orders[order_id] = views.pop(order_id)
        if len(views) > KEPT_ORDERS_LIMIT:
            batch.orders.update(views)
            handed_on.update(views)
            self.views = {}
        return batch

    def rest(self) -> Batch | None:
        if not self.views:
            if self.handover is not None:
                self.handover.close()
            return None
        batch = Batch()
        batch.reader = self.reader
        views = self.views
        # In creation order: see ``batch.SqlStore._save_orders``.
        rows = sorted((order_row(k, v) for k, v in views.items()), key=created_then_id)
        if self.handover is None:
            batch.rows = rows
        else:
            batch.rows = self.handover.append("orders", rows)
            self.handover.close()
        batch.rows_money = money_changes({}, views)
        batch.rows_stock = stock_changes({}, views)
        return batch
