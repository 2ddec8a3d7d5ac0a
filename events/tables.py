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
