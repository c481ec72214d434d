"""Dead letters: every record of tally.dead-letter, listable per project, replayable and discardable.

Revision ID: 0003_dead_letters
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_dead_letters"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("original", sa.LargeBinary(), nullable=False),
        sa.Column("original_size", sa.Integer(), nullable=False),
        sa.Column("original_truncated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'open'"), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_by", sa.String(length=200), nullable=True),
        sa.Column("replay_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=SCHEMA,
    )
    op.create_index("ix_dead_letters_project", "dead_letters", ["project_id", "status", "failed_at", "id"],
                    schema=SCHEMA)
    op.create_index("ix_dead_letters_event", "dead_letters", ["event_id"], schema=SCHEMA)
    op.create_index("ix_dead_letters_origin", "dead_letters", ["topic", "partition", "offset"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("dead_letters", schema=SCHEMA)
