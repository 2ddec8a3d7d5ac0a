"""The carrier's bookings (its idempotency keys are services.standin's)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table

metadata = MetaData()

bookings = Table(
    "bookings",
    metadata,
    Column("booking_id", String(36), primary_key=True),
    Column("reference", String(200), nullable=False),
    Column("carrier", String(40), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("country", String(2), nullable=False),
    Column("postal_code", String(40), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
