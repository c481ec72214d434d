"""The ingest schema: ingest keeps no tables (it only publishes); the schema holds Alembic's version table.

Revision ID: 0001
Revises:
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
