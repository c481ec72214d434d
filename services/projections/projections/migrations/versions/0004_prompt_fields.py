"""Observations: the prompt (name and version) a generation was made from.

Revision ID: 0005
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_prompt_fields"
down_revision = "0003_dead_letters"
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.add_column("observations", sa.Column("prompt_name", sa.Text(), nullable=True), schema=SCHEMA)
    op.add_column("observations", sa.Column("prompt_version", sa.Integer(), nullable=True), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("observations", "prompt_version", schema=SCHEMA)
    op.drop_column("observations", "prompt_name", schema=SCHEMA)
