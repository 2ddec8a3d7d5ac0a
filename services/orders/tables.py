"""The orders service's own tables: orders, and its replica of the platform's prices."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, String, Table, Text

metadata = MetaData()

orders = Table(
    "orders_orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("lines", Text, nullable=False),  # JSON list of {sku, quantity, unit_price_cents}
    Column("shipping_address", Text, nullable=False),  # JSON object
    Column("reason", Text),
    Column("failed_step", String(32)),
    Column("shipment_id", String(255)),
    Column("late_facts", Text, nullable=False, default="[]"),  # facts after the end, for audit
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The saga's deadline and where it waits (domain.Step); waiting_on is NULL once the order
    # ended. stuck_at: when the watchdog flagged it overdue at that step (NULL again when the
    # order moves on, so that it can be flagged at the next step).
    Column("deadline_at", DateTime(timezone=True), nullable=False),
    Column("waiting_on", String(32)),
    Column("waiting_since", DateTime(timezone=True)),
    Column("stuck_at", DateTime(timezone=True)),
    # The saga's correlation id and trace, from OrderCreated: what the watchdog's events join.
    Column("correlation_id", String(255)),
    Column("traceparent", String(55)),
)
Index("ix_orders_orders_status", orders.c.status)
Index("ix_orders_orders_customer", orders.c.customer_id)
# The watchdog's scan: pending orders not flagged yet, by deadline. Partial, so it holds only
# the orders in flight (no constants in the condition: SQLite matches a partial index against
# a query's terms at prepare time, before parameters are bound).
_in_flight = orders.c.waiting_on.is_not(None) & orders.c.stuck_at.is_(None)
Index(
    "ix_orders_orders_overdue",
    orders.c.deadline_at,
    sqlite_where=_in_flight,
    postgresql_where=_in_flight,
)

# The unit price per SKU as inventory last published it (SkuPriced): what POST /orders prices
# lines with. Its own table, so that existing databases need no ALTER (create_all adds it).
prices = Table(
    "orders_prices",
    metadata,
    Column("sku", String(255), primary_key=True),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("priced_at", DateTime(timezone=True), nullable=False),
)
