"""The ``dead_letters`` table: every record of ``tally.dead-letter``, with its status (open, replayed, discarded).

Unlike the read models it is not derived from events alone (people replay and discard), so a rebuild leaves it
where it is: it is not among ``tables.Tables`` and is never copied into the shadow schema.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)

from projections import SCHEMA

STATUSES = ("open", "replayed", "discarded")

metadata = MetaData(schema=SCHEMA)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", Uuid, primary_key=True),
    # NULL: the original did not say (or not validly) which project it belongs to; only operators see those.
    Column("project_id", String(64), nullable=True),
    Column("consumer", String(200), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", Uuid, nullable=True),
    Column("event_type", String(100), nullable=True),
    Column("key", Text, nullable=True),
    Column("reason_code", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("original", LargeBinary, nullable=False),
    Column("original_size", Integer, nullable=False),
    Column("original_truncated", Boolean, nullable=False, server_default=text("false")),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", String(16), nullable=False, server_default=text("'open'")),
    Column("status_at", DateTime(timezone=True), nullable=True),
    Column("status_by", String(200), nullable=True),
    Column("replay_count", Integer, nullable=False, server_default=text("0")),
    Index("ix_dead_letters_project", "project_id", "status", "failed_at", "id"),
    Index("ix_dead_letters_event", "event_id"),
    Index("ix_dead_letters_origin", "topic", "partition", "offset"),
)
