"""Notifications' table: the one notification each order's customer received."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()

# order_id as the primary key makes "once per order" hold in the database too.
sent = Table(
    "notifications_sent",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("notification_id", String(36), nullable=False, unique=True),
    Column("customer_id", String(255), nullable=False),
    Column("order_status", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("cause_event_id", String(36), nullable=False),  # the terminal event that decided
    Column("notified_at", DateTime(timezone=True), nullable=False),
)
