"""Shipping's tables: one row per order that reached shipping (a shipment or a tombstone),
and the calls made to the carrier."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

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

# Each call to the carrier whose answer an effect here rests on, written in the transaction
# of that effect: what was asked under which key, and what came back (the booking a
# cancellation needs). A call whose transaction rolled back leaves no row; its event is
# redelivered and re-sends the same key, so the carrier answers as the first time.
carrier_calls = Table(
    "shipping_carrier_calls",
    metadata,
    Column("idempotency_key", String(36), primary_key=True),
    Column("order_id", String(36), nullable=False),
    Column("operation", String(16), nullable=False),  # book, cancel
    Column("status", Integer, nullable=False),  # the carrier's HTTP status
    Column("answer", Text, nullable=False),  # its JSON body
    Column("created_at", DateTime(timezone=True), nullable=False),
)
