"""Traces: sort_ts (timestamp, else first seen) with an index, so trace lists sort and page without a scan.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.add_column("traces", sa.Column("sort_ts", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.execute(f'UPDATE "{SCHEMA}".traces SET sort_ts = COALESCE("timestamp", created_at)')
    op.create_index("ix_traces_sort", "traces", ["project_id", "sort_ts", "id"], unique=False, schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_traces_sort", table_name="traces", schema=SCHEMA)
    op.drop_column("traces", "sort_ts", schema=SCHEMA)
