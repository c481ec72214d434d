"""Queue reviews: when a lease last started and last ended, and skips taken back, so progress counts only live
work as in progress and each skipped item once.

Revision ID: 0003_review_workflow
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_review_workflow"
down_revision = "0006_deletion_sessions"
branch_labels = None
depends_on = None

SCHEMA = "projections"
COLUMNS = ("last_leased_at", "last_ended_at", "last_skipped_at", "skip_undone_at")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("queue_reviews", sa.Column(name, sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    # Reviews recorded before: a lease counts as ended once the review completed or was skipped.
    op.execute(f'UPDATE "{SCHEMA}".queue_reviews SET last_leased_at = leased_at, last_skipped_at = skipped_at, '
               "last_ended_at = COALESCE(completed_at, skipped_at, flagged_at)")


def downgrade() -> None:
    for name in COLUMNS:
        op.drop_column("queue_reviews", name, schema=SCHEMA)
