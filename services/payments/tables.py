"""The payments service's tables (SQLAlchemy Core): accounts, payments, cancelled orders, and
the calls made to the payment provider."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

accounts = Table(
    "payments_accounts",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("balance_cents", BigInteger, nullable=False),
    Column("deposited_cents", BigInteger, nullable=False),
    Column("captured_cents", BigInteger, nullable=False),
    Column("refunded_cents", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The database refuses what the domain never does: an overdraft or unbalanced books.
    CheckConstraint("balance_cents >= 0", name="payments_accounts_no_overdraft"),
    CheckConstraint(
        "balance_cents + captured_cents - refunded_cents = deposited_cents",
        name="payments_accounts_balanced",
    ),
)

payments = Table(
    "payments_payments",
    metadata,
    Column("order_id", String(36), primary_key=True),  # one payment per order, ever
    Column("payment_id", String(36), nullable=False, unique=True),
    Column("customer_id", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),  # why it was declined or refunded
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Applied deposits by id: the same deposit sent twice (even as two events) credits once.
deposits = Table(
    "payments_deposits",
    metadata,
    Column("deposit_id", String(36), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("deposited_at", DateTime(timezone=True), nullable=False),
)

# Orders cancelled before any payment: a StockReserved still in flight must not charge them.
tombstones = Table(
    "payments_tombstones",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=False),
)

# Each call to the payment provider whose answer an effect here rests on, written in the
# transaction of that effect: what was asked under which key, and what came back (the
# capture id a refund needs, the reason of a decline). A call whose transaction rolled back
# leaves no row; its event is redelivered and re-sends the same key, so the provider answers
# as the first time.
attempts = Table(
    "payments_attempts",
    metadata,
    Column("idempotency_key", String(36), primary_key=True),
    Column("order_id", String(36), nullable=False),
    Column("operation", String(16), nullable=False),  # authorise, capture, refund, void
    Column("customer_id", String(255), nullable=False),
    Column("amount_cents", BigInteger),
    Column("status", Integer, nullable=False),  # the provider's HTTP status
    Column("answer", Text, nullable=False),  # its JSON body
    Column("created_at", DateTime(timezone=True), nullable=False),
)
