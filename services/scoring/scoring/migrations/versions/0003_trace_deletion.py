"""Tombstones of deleted traces.

Revision ID: 0002_trace_deletion
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_trace_deletion"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "scoring"


def upgrade() -> None:
    op.create_table(
        "deleted_traces",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(200), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("deleted_traces", schema=SCHEMA)
