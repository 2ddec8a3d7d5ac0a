"""Applying a whole batch of events at once: load what it touches, join, write back.

The projection's ``collect`` (``collect.collect_events``) folds a batch's events into a
``Batch`` of partial views, with no I/O (so a replay's reader processes can do it); its
``write`` (``write_batch``) hooks that batch on the session. Just before the transaction
commits (the very transaction that saves the projection's offsets) the batch is written:
one SELECT for the orders it touches, the joins in memory, then one executemany per table.
A batch of thousands of events costs a handful of statements instead of several per event.

The flush runs as a ``before_commit`` listener of the session, so inside the runtime's own
transaction and in SQLAlchemy's greenlet: it uses the synchronous Session API. What it
reads and writes goes through ``collect.Store`` (the SQL tables here; a dict-backed fake in
the unit tests, which run the very same batch logic).

While a replay fills a generation nobody reads yet (``Generation.building``), the store keeps
order views in memory across its transactions (``BuildingStore``): an order's events lie on
five topics and so in several batches, and each order row is then written once, when the
replay flushes, instead of loaded and rewritten by every batch that touches it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from events.projection_store import Generation
from events.reading import NotCoPartitioned
from services.query import sql
from services.query.collect import Batch, Changes, Rows, customers_after, skus_after
from services.query.domain import View, join_into
from services.query.figures import Customer, Folded, Sku, fold, money_changes, stock_changes
from services.query.handover import RowsFile, read_rows
from services.query.rows import (
    created_then_id,
    customer_from_row,
    customer_row,
    order_row,
    order_view,
    sku_from_row,
    sku_row,
)
from services.query.tables import CUSTOMERS, DEPOSITS, ORDERS, RESTOCKS, SKUS, TIMELINE

_KEY = "choreo.query.batch"


class SqlStore:
    """The generation's tables, through the projection's own transaction."""

    def __init__(self, session: Session, gen: Generation) -> None:
        self.session, self.gen = session, gen
        self.stored: dict[str, tuple[Any, ...]] = {}  # order rows as loaded

    def join_orders(self, patches: dict[str, View]) -> Folded:
        return fold(self.orders(patches), patches)

    def orders(self, keys: Iterable[str]) -> dict[str, View]:
        rows = sql.load(self.session, self.gen[ORDERS], keys)
        self.stored = {r[0]: tuple(r) for r in rows}
        return {k: order_view(r) for k, r in self.stored.items()}

    def claim(self, reader: int, order_ids: set[str]) -> None:
        pass  # only a generation being built takes readers' batches (``BuildingStore``)

    def customers(self, keys: Iterable[str]) -> dict[str, Customer]:
        rows = sql.load(self.session, self.gen[CUSTOMERS], keys)
        return {r[0]: customer_from_row(r) for r in rows}

    def skus(self, keys: Iterable[str]) -> dict[str, Sku]:
        return {r[0]: sku_from_row(r) for r in sql.load(self.session, self.gen[SKUS], keys)}

    def deposits_seen(self, keys: Iterable[str]) -> set[str]:
        return sql.existing(self.session, self.gen[DEPOSITS], keys)

    def restocks_seen(self, keys: Iterable[str]) -> set[str]:
        return sql.existing(self.session, self.gen[RESTOCKS], keys)

    def save(self, changes: Changes) -> None:
        s, gen = self.session, self.gen
        self._save_orders(changes.orders)
        # Rows a replay reader made whole: no other reader had these orders (``claim``), and
        # the table must not have them either.
        self._insert_fresh(gen[ORDERS], changes.rows)
        if isinstance(changes.timeline, RowsFile):
            sql.insert_file(s, gen[TIMELINE], changes.timeline, new_only=True)
        else:
            sql.insert_new(s, gen[TIMELINE], changes.timeline)
        sql.insert_new(s, gen[DEPOSITS], changes.deposits)
        sql.insert_new(s, gen[RESTOCKS], changes.restocks)
        sql.upsert(s, gen[CUSTOMERS], [customer_row(c) for c in changes.customers])
        sql.upsert(s, gen[SKUS], [sku_row(k) for k in changes.skus])

    def _save_orders(self, views: dict[str, View]) -> dict[str, tuple[Any, ...]]:
        """New orders inserted; stored ones updated in the columns that changed only, one
        executemany per set of changed columns (a handful of shapes: payment, stock, ...).
        Returns the rows as now stored."""
        table = self.gen[ORDERS]
        names = [c.name for c in table.columns]
        rows = {order_id: order_row(order_id, view) for order_id, view in views.items()}
        fresh: list[tuple[Any, ...]] = []
        changes: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
        for order_id, row in rows.items():
            old = self.stored.get(order_id)
            if old is None:
                fresh.append(row)
                continue
            changed = tuple([i for i, (a, b) in enumerate(zip(row, old, strict=True)) if a != b])
            if changed:
                changes.setdefault(changed, []).append((*(row[i] for i in changed), order_id))
        # In creation order: a replay's flush is all inserts (see ``created_then_id``).
        fresh.sort(key=created_then_id)
        self._insert_fresh(table, fresh)
        for changed, changed_rows in changes.items():
            columns = tuple(names[i] for i in changed)
            sql.update_columns(self.session, table, columns, changed_rows)
        return rows

    def _insert_fresh(self, table: Table, rows: Rows) -> None:
        """Orders not loaded, so new to the table as far as this store knows."""
        sql.upsert(self.session, table, read_rows(rows) if isinstance(rows, RowsFile) else rows)


class BuildingStore(SqlStore):
    """The store of a generation a replay is filling: order views stay in memory across
    transactions (``OrderCache``), each written once when the replay flushes instead of
    reloaded and rewritten by every batch that touches the order again; and what the orders
    add to their customers and SKUs is counted then too, once per order instead of once per
    batch that changes it (the figures are functions of the views, so the sum of the
    changes is the change of the sum). Everything else is written per transaction as usual:
    nobody reads the generation before the flush."""

    def __init__(self, session: Session, gen: Generation, cache: OrderCache) -> None:
        super().__init__(session, gen)
        self.cache = cache

    def claim(self, reader: int, order_ids: set[str]) -> None:
        # Set operations, in C: a replay claims every order of every batch. Early, for the
        # first OWNERS_LIMIT orders (bounded memory); past them two readers' rows of one
        # order still collide in the table (``_insert_fresh``), at their end.
        owned = self.cache.owned
        for other, theirs in owned.items():
            if other != reader and not theirs.isdisjoint(order_ids):
                order_id = min(theirs & order_ids)
                raise NotCoPartitioned(
                    f"order {order_id} has events in the shares of readers {other} and {reader}"
                )
        if sum(map(len, owned.values())) < OWNERS_LIMIT:
            owned.setdefault(reader, set()).update(order_ids)

    def _insert_fresh(self, table: Table, rows: Rows) -> None:
        # In a generation being built, an order the cache did not load is in the table only
        # if another replay reader wrote it: its events were split between readers.
        try:
            if isinstance(rows, RowsFile):
                sql.insert_file(self.session, table, rows)
            else:
                sql.insert(self.session, table, rows)
        except IntegrityError as exc:
            raise NotCoPartitioned(f"an order's rows came from two readers: {exc.orig}") from None

    def join_orders(self, patches: dict[str, View]) -> Folded:
        views = self.cache.views
        missing = [k for k in patches if k not in views]
        if missing:
            for k, row in (
                (r[0], tuple(r)) for r in sql.load(self.session, self.gen[ORDERS], missing)
            ):
                self.cache.rows[k] = row
                views[k] = order_view(row)
        for order_id, patch in patches.items():
            join_into(views, order_id, patch)  # the cache's own views: no copies
        self.cache.dirty.update(patches)
        return Folded({}, {}, {})

    def save(self, changes: Changes) -> None:
        super().save(changes)
        if len(self.cache.views) > self.cache.limit:
            self.flush()
            self.cache.clear()  # bounded memory: later batches load what they touch again

    def flush(self) -> None:
        cache = self.cache
        after = {k: cache.views[k] for k in cache.dirty}
        before = {k: order_view(cache.rows[k]) for k in cache.dirty if k in cache.rows}
        self.stored = cache.rows
        cache.rows.update(self._save_orders(after))
        cache.dirty.clear()
        money, stock = money_changes(before, after), stock_changes(before, after)
        s, gen = self.session, self.gen
        sql.upsert(s, gen[CUSTOMERS], [customer_row(c) for c in customers_after(self, money)])
        sql.upsert(s, gen[SKUS], [sku_row(k) for k in skus_after(self, stock)])


# Orders whose reader a replay remembers, to refuse a second reader early (~100 B each).
OWNERS_LIMIT = 1_000_000
# Order views a replay keeps in memory (about 1 KB each) before it writes and forgets them.
ORDER_CACHE_LIMIT = 200_000


class OrderCache:
    """Order views (and the rows stored for them) of one generation being built."""

    def __init__(self, limit: int = ORDER_CACHE_LIMIT) -> None:
        self.limit = limit  # orders held before they are written and forgotten
        self.views: dict[str, View] = {}
        self.rows: dict[str, tuple[Any, ...]] = {}  # what the table holds for an order
        self.dirty: set[str] = set()
        # Replay reader -> the orders whose events came from it (readers that keep orders).
        self.owned: dict[int, set[str]] = {}

    def clear(self) -> None:
        self.views.clear()
        self.rows.clear()
        self.dirty.clear()


_caches: weakref.WeakKeyDictionary[Generation, OrderCache] = weakref.WeakKeyDictionary()


def _store(session: Session, gen: Generation) -> SqlStore:
    if not gen.building:
        return SqlStore(session, gen)
    cache = _caches.get(gen)
    if cache is None:
        cache = _caches[gen] = OrderCache(ORDER_CACHE_LIMIT)
    return BuildingStore(session, gen, cache)


async def flush_building(session: AsyncSession, gen: Generation) -> None:
    """Writes the order views a replay kept in memory for the generation it fills."""
    cache = _caches.get(gen)
    if cache is not None:
        await session.run_sync(lambda s: BuildingStore(s, gen, cache).flush())


async def write_batch(session: AsyncSession, gen: Generation, batch: Batch) -> None:
    """Hooks the batch's write on the transaction's commit (the projection's ``write``)."""
    if _KEY in session.info:
        raise RuntimeError("one transaction took two batches of the query projection")
    session.info[_KEY] = batch

    def flush(sync_session: Session) -> None:
        sync_session.info.pop(_KEY, None)
        batch.write_to(_store(sync_session, gen))

    event.listen(session.sync_session, "before_commit", flush, once=True)
