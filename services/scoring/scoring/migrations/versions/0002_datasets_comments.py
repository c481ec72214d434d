"""scoring: datasets, dataset items, dataset runs and run items, comments

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
S = "scoring"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_datasets_project_name"),
        schema=S,
    )
    op.create_table(
        "dataset_items",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source_trace_id", sa.String(200)),
        sa.Column("source_observation_id", sa.String(200)),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted_at", TS),
        schema=S,
    )
    op.create_index("ix_dataset_items_dataset", "dataset_items", ["project_id", "dataset_id", "created_at"],
                    schema=S)
    op.create_table(
        "dataset_runs",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("metadata", JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("project_id", "dataset_id", "name", name="uq_dataset_runs_name"),
        schema=S,
    )
    op.create_table(
        "dataset_run_items",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_dataset_run_items_run", "dataset_run_items", ["project_id", "run_id", "created_at"],
                    schema=S)
    op.create_table(
        "comments",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("object_type", sa.String(20), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=False),
        sa.Column("author_user_id", sa.String(200)),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=S,
    )
    op.create_index("ix_comments_object", "comments", ["project_id", "object_type", "object_id", "created_at"],
                    schema=S)


def downgrade() -> None:
    for table in ("comments", "dataset_run_items", "dataset_runs", "dataset_items", "datasets"):
        op.drop_table(table, schema=S)
