"""The payment provider's own books (its idempotency keys are services.standin's)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, MetaData, String, Table

metadata = MetaData()

ID = 36  # a UUID's text

authorisations = Table(
    "authorisations",
    metadata,
    Column("authorisation_id", String(ID), primary_key=True),
    Column("reference", String(200), nullable=False),
    Column("customer_id", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

captures = Table(
    "captures",
    metadata,
    Column("capture_id", String(ID), primary_key=True),
    # unique: one capture per authorisation, also when two keys race for it
    Column(
        "authorisation_id",
        String(ID),
        ForeignKey("authorisations.authorisation_id"),
        nullable=False,
        unique=True,
    ),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(ID), primary_key=True),
    Column("capture_id", String(ID), ForeignKey("captures.capture_id"), nullable=False, index=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
