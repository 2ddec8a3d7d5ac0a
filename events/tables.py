"""The platform's own tables, created in every service's database beside its domain tables."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
_Id = BigInteger().with_variant(Integer(), "sqlite")

outbox = Table(
    "choreo_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),  # JSON object of the envelope headers
    Column("traceparent", String(55)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
)
# The relay's hot query: unsent rows in id order.
Index(
    "ix_choreo_outbox_unsent",
    outbox.c.id,
    sqlite_where=outbox.c.sent_at.is_(None),
    postgresql_where=outbox.c.sent_at.is_(None),
)
Index("ix_choreo_outbox_sent_at", outbox.c.sent_at)
# PostgreSQL: the relay's probe for a key's older unsent row (events.relay); SQLite has one
# writer at a time, so its ids commit in order and it needs no such probe.
Index(
    "ix_choreo_outbox_unsent_key",
    outbox.c.key,
    outbox.c.id,
    postgresql_where=outbox.c.sent_at.is_(None),
).ddl_if(dialect="postgresql")

inbox = Table(
    "choreo_inbox",
    metadata,
    Column("consumer", String(255), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("outcome", String(16), nullable=False),  # applied | dead-lettered | ignored
    Column("processed_at", DateTime(timezone=True), nullable=False),
)

# Projections: which generation of a projection's tables serves reads, and how far each
# generation has read every partition (written in the same transaction as its rows).
projections = Table(
    "choreo_projections",
    metadata,
    Column("projection", String(255), primary_key=True),
    Column("active_generation", Integer, nullable=False),
    Column("building_generation", Integer),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

projection_offsets = Table(
    "choreo_projection_offsets",
    metadata,
    Column("projection", String(255), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Outbox rows Kafka refused for good (too large, not authorised, unknown topic): moved here,
# out of the relay's way, in the transaction that removes them from the outbox; an operator
# re-queues (`choreo outbox retry`) or drops them. A table of its own so that existing
# databases need no ALTER: create_all adds it.
outbox_quarantine = Table(
    "choreo_outbox_quarantine",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),  # the row's id in the outbox
    Column("event_id", String(36), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("traceparent", String(55)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("error_type", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("quarantined_at", DateTime(timezone=True), nullable=False),
)

# Sequenced dead letters (events.parking): once a consumer dead-letters an event of a key,
# the key is blocked for that consumer and its later events wait in order, parked, until the
# blocking event is re-driven and applied or an operator releases the key. Tables of their
# own so that existing databases need no ALTER: create_all adds them.
blocked_keys = Table(
    "choreo_blocked_keys",
    metadata,
    Column("consumer", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),  # events.parking.key_text
    Column("event_id", String(36), nullable=False),  # of the dead-lettered event
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("blocked_at", DateTime(timezone=True), nullable=False),
    Column("released_at", DateTime(timezone=True)),  # an operator asked to skip the first
)

parked_events = Table(
    "choreo_parked_events",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),  # the order they arrived in
    Column("consumer", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("key_bytes", LargeBinary),
    Column("value", LargeBinary),
    Column("headers", Text, nullable=False),  # JSON list of [name, base64 value]
    Column("parked_at", DateTime(timezone=True), nullable=False),
)
Index("ix_choreo_parked_events_key", parked_events.c.consumer, parked_events.c.key)
