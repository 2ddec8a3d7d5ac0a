"""The inventory service's tables (SQLAlchemy Core): stock and prices per SKU, reservations per
order."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()

stock = Table(
    "inventory_stock",
    metadata,
    Column("sku", String(255), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("shipped", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The database refuses what the domain never does: a negative count or unbalanced books.
    CheckConstraint(
        "on_hand >= 0 AND reserved >= 0 AND shipped >= 0 AND received >= 0",
        name="inventory_stock_non_negative",
    ),
    CheckConstraint("on_hand + reserved = received - shipped", name="inventory_stock_balanced"),
)

reservations = Table(
    "inventory_reservations",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("lines", Text, nullable=False),  # JSON list of {"sku", "quantity"}, as ordered
    Column("reason", Text),  # why it was rejected or released
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Applied restocks by id: the same restock sent twice (even as two events) counts once.
restocks = Table(
    "inventory_restocks",
    metadata,
    Column("restock_id", String(36), primary_key=True),
    Column("sku", String(255), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("restocked_at", DateTime(timezone=True), nullable=False),
)

# The unit price per SKU, set by a restock that names one (its own table, so that existing
# databases need no ALTER: create_all adds it). A SKU never priced has no row.
prices = Table(
    "inventory_prices",
    metadata,
    Column("sku", String(255), primary_key=True),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("restock_id", String(36), nullable=False),  # the restock that set it
    Column("priced_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("unit_price_cents >= 0", name="inventory_prices_non_negative"),
)
