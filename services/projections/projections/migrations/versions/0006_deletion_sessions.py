"""Trace deletion: tombstones of deleted traces; an index for sessions (traces by session id).

Revision ID: 0004_deletion_sessions
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_deletion_sessions"
down_revision = "0005_datasets"
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.create_table(
        "deleted_traces",
        sa.Column("project_id", sa.String(200), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_traces_session", "traces", ["project_id", "session_id"], unique=False, schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_traces_session", table_name="traces", schema=SCHEMA)
    op.drop_table("deleted_traces", schema=SCHEMA)
