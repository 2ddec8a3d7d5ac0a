"""Shipping's tables: one row per order that reached shipping (a shipment or a tombstone)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()

# One row per order, the tombstone included: a capture and a cancellation racing on two
# consumers then collide on the primary key instead of both winning.
shipments = Table(
    "shipping_shipments",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("shipment_id", String(64), unique=True),  # NULL for a tombstone
    Column("carrier", String(64)),
    Column("reason", Text),  # why it failed or was cancelled
    Column("address", Text),  # JSON of the shipping address; NULL for a tombstone
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
