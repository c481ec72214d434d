"""scoring: score configs with versions, scores with history, outbox, processed events

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
S = "scoring"


def upgrade() -> None:
    op.create_table(
        "score_configs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data_type", sa.String(20), nullable=False),
        sa.Column("is_archived", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_score_configs_project_name"),
        schema=S,
    )
    op.create_index("ix_score_configs_project_created", "score_configs", ["project_id", "created_at"], schema=S)
    op.create_table(
        "score_config_versions",
        sa.Column("config_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_table(
        "scores",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data_type", sa.String(20), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("string_value", sa.Text),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("trace_id", sa.String(200)),
        sa.Column("observation_id", sa.String(200)),
        sa.Column("session_id", sa.String(200)),
        sa.Column("dataset_run_id", sa.String(200)),
        sa.Column("config_id", sa.String(64)),
        sa.Column("config_version", sa.Integer),
        sa.Column("author_user_id", sa.String(200)),
        sa.Column("queue_id", sa.String(200)),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.Column("deleted_by", sa.String(200)),
        schema=S,
    )
    op.execute(f'CREATE INDEX ix_scores_project_ts ON "{S}".scores (project_id, "timestamp" DESC, id DESC)')
    op.create_index("ix_scores_project_trace", "scores", ["project_id", "trace_id"], schema=S)
    op.create_index("ix_scores_project_config", "scores", ["project_id", "config_id"], schema=S)
    op.create_index("uq_scores_idempotency", "scores", ["project_id", "idempotency_key"], unique=True, schema=S,
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.create_table(
        "score_history",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("score_id", sa.String(200), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )
    op.create_index("ix_outbox_created", "outbox", ["created_at"], schema=S)
    op.create_index("ix_outbox_aggregate", "outbox", ["project_id", "aggregate_id"], schema=S)
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )


def downgrade() -> None:
    for t in ("processed_events", "outbox", "score_history", "scores", "score_config_versions", "score_configs"):
        op.drop_table(t, schema=S)
