from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from scoring import SCHEMA
from tally_shared.claims import processed_events_table
from tally_shared.outbox import outbox_table

metadata = MetaData(schema=SCHEMA)

score_configs = Table(
    "score_configs", metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("data_type", String(20), nullable=False),
    Column("is_archived", Boolean, nullable=False, server_default="false"),
    # The full current snapshot (ScoreConfigData as JSON): one read gives everything.
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "name", name="uq_score_configs_project_name"),
    Index("ix_score_configs_project_created", "project_id", "created_at"),
)

score_config_versions = Table(
    "score_config_versions", metadata,
    Column("config_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

scores = Table(
    "scores", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("data_type", String(20), nullable=False),
    Column("value", Float),
    Column("string_value", Text),
    Column("source", String(20), nullable=False),
    Column("trace_id", String(200)),
    Column("observation_id", String(200)),
    Column("session_id", String(200)),
    Column("dataset_run_id", String(200)),
    Column("config_id", String(64)),
    Column("config_version", Integer),
    Column("author_user_id", String(200)),
    Column("queue_id", String(200)),
    Column("environment", String(40), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    # The full ScoreData snapshot; the columns above are copies for filtering.
    Column("data", JSONB, nullable=False),
    Column("revision", Integer, nullable=False, server_default="1"),
    Column("idempotency_key", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
    Column("deleted_by", String(200)),
)

score_history = Table(
    "score_history", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("score_id", String(200), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("action", String(20), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("actor", String(200)),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Transactional outbox (tally_shared.outbox): every event is written here in the transaction of its effect,
# published right after commit, and deleted once the broker acknowledged it. A relay re-publishes rows left behind
# by a crash.
outbox = outbox_table(metadata)

processed_events = processed_events_table(metadata)

# Datasets and comments: scoring is their only writer; each row's snapshot is what its event carries.
datasets = Table(
    "datasets", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),
)

dataset_items = Table(
    "dataset_items", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("dataset_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("source_trace_id", String(200)),
    Column("source_observation_id", String(200)),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
    Index("ix_dataset_items_dataset", "project_id", "dataset_id", "created_at"),
)

dataset_runs = Table(
    "dataset_runs", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("dataset_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("metadata", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project_id", "dataset_id", "name", name="uq_dataset_runs_name"),
)

dataset_run_items = Table(
    "dataset_run_items", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_dataset_run_items_run", "project_id", "run_id", "created_at"),
)

comments = Table(
    "comments", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("object_type", String(20), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("author_user_id", String(200)),
    Column("data", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_comments_object", "project_id", "object_type", "object_id", "created_at"),
)

Index("ix_scores_project_ts", scores.c.project_id, scores.c.timestamp.desc(), scores.c.id.desc())
Index("ix_scores_project_trace", scores.c.project_id, scores.c.trace_id)
Index("ix_scores_project_config", scores.c.project_id, scores.c.config_id)
Index("uq_scores_idempotency", scores.c.project_id, scores.c.idempotency_key, unique=True,
      postgresql_where=scores.c.idempotency_key.isnot(None))

# Tombstones of deleted traces (TraceDeleted): their scores were deleted, and new scores for them are refused.
deleted_traces = Table(
    "deleted_traces", metadata,
    Column("project_id", String(64), primary_key=True),
    Column("trace_id", String(200), primary_key=True),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
)
