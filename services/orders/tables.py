"""The orders service's own tables."""

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
)
Index("ix_orders_orders_status", orders.c.status)
Index("ix_orders_orders_customer", orders.c.customer_id)
