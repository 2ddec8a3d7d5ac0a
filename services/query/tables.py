"""The query projection's tables, defined once per generation (``suffix`` is ``_g<N>``).

Base names (what ``Generation.__getitem__`` takes) are the names without the suffix.
Times are ISO-8601 text in UTC with microseconds (``services.query.domain.iso``): fixed width,
so they sort as times on every backend, and they cost no conversion per value on the hot
write path.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

ORDERS = "query_orders"
TIMELINE = "query_timeline"
CUSTOMERS = "query_customers"
SKUS = "query_skus"
DEPOSITS = "query_deposits"
RESTOCKS = "query_restocks"

_Time = String(32)


def define_tables(md: MetaData, suffix: str) -> None:
    orders = Table(
        ORDERS + suffix,
        md,
        Column("order_id", String(36), primary_key=True),
        Column("customer_id", String(255)),
        Column("status", String(16)),  # NULL until OrderCreated is seen: not listed yet
        Column("total_cents", BigInteger),
        Column("lines", Text),  # JSON list of {sku, quantity, unit_price_cents}
        Column("created_at", _Time),
        Column("updated_at", _Time, nullable=False),  # latest occurred_at of its events
        Column("terminal_at", _Time),
        Column("terminal_event_id", String(36)),
        Column("reason", Text),
        Column("failed_step", String(32)),
        Column("payment_id", String(255)),
        Column("payment_status", String(16)),
        Column("captured_cents", BigInteger),
        Column("refunded_cents", BigInteger),
        Column("payment_reason", Text),
        Column("shipment_id", String(255)),
        Column("shipment_status", String(16)),
        Column("carrier", String(255)),
        Column("shipment_reason", Text),
        Column("stock_status", String(16)),
        Column("stock_lines", Text),  # JSON list of [sku, quantity] as inventory reserved
        Column("stock_reason", Text),
        Column("notified_at", _Time),
        # The latest OrderStuck (domain.Stuck), and stuck_now_at: its detected_at while it
        # still holds (domain.stuck_now: pending, not past that step), else NULL.
        Column("stuck_at", _Time),
        Column("stuck_event_id", String(36)),
        Column("waiting_on", String(32)),
        Column("waiting_since", _Time),
        Column("deadline_at", _Time),
        Column("stuck_now_at", _Time),
    )
    # The list endpoint pages by (created_at, order_id), optionally per status or customer.
    Index(f"ix_{ORDERS}{suffix}_created", orders.c.created_at, orders.c.order_id)
    # ... or over the orders stuck now: a partial index, so it costs writes only for those
    # (and no constant in its condition: SQLite matches it before parameters are bound).
    stuck_now = orders.c.stuck_now_at.is_not(None)
    Index(
        f"ix_{ORDERS}{suffix}_stuck",
        orders.c.created_at,
        orders.c.order_id,
        sqlite_where=stuck_now,
        postgresql_where=stuck_now,
    )
    Index(
        f"ix_{ORDERS}{suffix}_status",
        orders.c.status,
        orders.c.created_at,
        orders.c.order_id,
    )
    Index(
        f"ix_{ORDERS}{suffix}_customer",
        orders.c.customer_id,
        orders.c.created_at,
        orders.c.order_id,
    )

    # Keyed by order first, so the key's index serves the timeline read too (one range
    # scan); an event belongs to one order, so a re-sent event is still one row. Rows are
    # appended in rowid order: only the small key index takes random inserts (order ids
    # are random), which on SQLite dirties far fewer pages per batch than a table
    # clustered on the key.
    Table(
        TIMELINE + suffix,
        md,
        Column("order_id", String(36), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("event_type", String(255), nullable=False),
        Column("service", String(255), nullable=False),  # the envelope's producer
        Column("occurred_at", _Time, nullable=False),
        Column("causation_id", String(255)),
        Column("correlation_id", String(255), nullable=False),
        Column("traceparent", Text),  # as received; the API shows its trace id
        Column("topic", String(255), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
    )

    Table(
        CUSTOMERS + suffix,
        md,
        Column("customer_id", String(255), primary_key=True),
        Column("orders_count", BigInteger, nullable=False),
        Column("deposited_cents", BigInteger, nullable=False),
        Column("captured_cents", BigInteger, nullable=False),
        Column("refunded_cents", BigInteger, nullable=False),
        Column("balance_cents", BigInteger, nullable=False),
        Column("balance_as_of", _Time),
        Column("last_declined_at", _Time),
        Column("last_declined_event_id", String(36)),
        Column("last_declined_balance_cents", BigInteger),
    )

    Table(
        SKUS + suffix,
        md,
        Column("sku", String(255), primary_key=True),
        Column("received", BigInteger, nullable=False),
        Column("reserved", BigInteger, nullable=False),
        Column("shipped", BigInteger, nullable=False),
        Column("on_hand", BigInteger, nullable=False),
    )

    # Deposits and restocks counted, by the ids payments and inventory dedupe them by.
    for name, key, owner, amount in (
        (DEPOSITS, "deposit_id", "customer_id", "amount_cents"),
        (RESTOCKS, "restock_id", "sku", "quantity"),
    ):
        Table(
            name + suffix,
            md,
            Column(key, String(36), primary_key=True),
            Column(owner, String(255), nullable=False),
            Column(amount, BigInteger, nullable=False),
        )
