"""The ``queue_router`` schema: queues, rules, items, review slots, the router's trace summaries, and the outbox."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from queue_router import SCHEMA
from tally_shared.claims import processed_events_table
from tally_shared.outbox import outbox_table

metadata = MetaData(schema=SCHEMA)

processed_events = processed_events_table(metadata)

queues = Table(
    "queues", metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    # [{"id": score config id, "required": bool}]
    Column("score_configs", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # user ids or emails; empty = anyone in the project who may review
    Column("reviewers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("reviewers_per_item", Integer, nullable=False, server_default="1"),
    Column("lease_seconds", Integer, nullable=False, server_default="600"),
    Column("blind", Boolean, nullable=False, server_default="false"),
    Column("is_archived", Boolean, nullable=False, server_default="false"),
    Column("created_by", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("project_id", "name", name="uq_queues_project_name"),
)

rules = Table(
    "rules", metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("queue_id", String(64), ForeignKey(f"{SCHEMA}.queues.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("filter", JSONB, nullable=False),
    Column("target", String(16), nullable=False, server_default="TRACE"),
    Column("sample_rate", Double, nullable=False, server_default="1"),
    Column("daily_cap", Integer),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("is_deleted", Boolean, nullable=False, server_default="false"),
    Column("created_by", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Bumped in the same transaction as any change to a project's rules or queues, so every router process can tell
# with one cheap read per batch whether its compiled rules are stale.
rule_versions = Table(
    "rule_versions", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False, server_default="0"),
)

rule_daily_counts = Table(
    "rule_daily_counts", metadata,
    Column("rule_id", String(64), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("count", Integer, nullable=False, server_default="0"),
)

items = Table(
    "items", metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("queue_id", String(64), ForeignKey(f"{SCHEMA}.queues.id"), nullable=False),
    Column("object_type", String(16), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("trace_id", String(200)),
    # PENDING | COMPLETED | REMOVED (a removed item stays as a tombstone so no rule re-adds it)
    Column("status", String(16), nullable=False, server_default="PENDING"),
    Column("reviewers_per_item", Integer, nullable=False, server_default="1"),
    Column("assignees", ARRAY(String(200))),
    Column("completions", Integer, nullable=False, server_default="0"),
    Column("flags", Integer, nullable=False, server_default="0"),
    Column("rule_id", String(64)),
    Column("reason", Text),
    Column("added_by", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Column("removed_at", DateTime(timezone=True)),
    Column("removed_by", String(200)),
    UniqueConstraint("queue_id", "object_type", "object_id", name="uq_items_queue_object"),
    Index("ix_items_queue_status_created", "queue_id", "status", "created_at"),
    Index("ix_items_project_trace", "project_id", "trace_id"),
)

# One row per review slot: an item needing N reviewers has N slots. A lease locks one slot row
# (SELECT ... FOR UPDATE SKIP LOCKED), so the row alone decides availability.
item_slots = Table(
    "item_slots", metadata,
    Column("item_id", String(64), ForeignKey(f"{SCHEMA}.items.id", ondelete="CASCADE"), primary_key=True),
    Column("slot_no", Integer, primary_key=True),
    Column("queue_id", String(64), nullable=False),
    # open | leased | done
    Column("state", String(16), nullable=False, server_default="open"),
    Column("reviewer", String(200)),
    Column("lease_id", String(64)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("assignees", ARRAY(String(200))),
    Column("item_created_at", DateTime(timezone=True), nullable=False),
    Index("ix_slots_claimable", "queue_id", "item_created_at", "item_id", "slot_no",
          postgresql_where=text("state <> 'done'")),
)

# Per item and reviewer: in_progress | completed | skipped | flagged | released | expired.
reviews = Table(
    "reviews", metadata,
    Column("item_id", String(64), ForeignKey(f"{SCHEMA}.items.id", ondelete="CASCADE"), primary_key=True),
    Column("reviewer", String(200), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("queue_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("lease_id", String(64)),
    Column("slot_no", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Index("ix_reviews_queue_reviewer", "queue_id", "reviewer", "status"),
    Index("ix_reviews_queue_completed", "queue_id", "completed_at"),
)

routing_decisions = Table(
    "routing_decisions", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("queue_id", String(64), nullable=False),
    Column("rule_id", String(64)),
    Column("object_type", String(16), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("item_id", String(64)),
    # added | duplicate | sampled_out | cap_reached | previously_removed
    Column("outcome", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", Uuid),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One decision of each outcome per (rule, object): re-evaluating an updated trace records nothing new.
    Index("uq_decisions_once", "queue_id", "rule_id", "object_type", "object_id", "outcome", unique=True,
          postgresql_nulls_not_distinct=True),
    Index("ix_decisions_object", "queue_id", "object_type", "object_id"),
)

# What the rules need to know about a trace, merged from every TraceIngested event. ``doc``: the rest of the
# summary (trace fields, aggregates, the merge state), JSON written and read only by the router
# (``adapters.stores``); the columns are what SQL reads.
trace_summaries = Table(
    "trace_summaries", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("trace_id", String(200), primary_key=True),
    Column("has_trace", Boolean, nullable=False, server_default="false"),
    Column("timestamp", DateTime(timezone=True)),
    Column("doc", LargeBinary, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Automated (EVAL and API) scores per trace; human annotations do not route.
trace_scores = Table(
    "trace_scores", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("score_id", String(200), primary_key=True),
    Column("trace_id", String(200), nullable=False),
    Column("observation_id", String(200)),
    Column("name", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("evaluator_name", Text),
    Column("data_type", String(16), nullable=False),
    Column("value", Double),
    Column("string_value", Text),
    Column("string_values", ARRAY(Text)),
    Column("timestamp", DateTime(timezone=True)),
    Index("ix_scores_trace", "project_id", "trace_id"),
)

# Transactional outbox: events are written here in the transaction that changes the state they describe; the
# relay publishes them to Kafka and marks them sent (at least once; consumers dedupe by event id).
outbox = outbox_table(metadata)

# Tombstones of deleted traces (TraceDeleted): later events about the trace are not routed, so it never comes back
# into a queue.
deleted_traces = Table(
    "deleted_traces", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("trace_id", String(200), primary_key=True),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
)
