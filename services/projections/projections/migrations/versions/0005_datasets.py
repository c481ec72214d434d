"""Traces keep their experiment's dataset id; datasets (id -> name) so experiment runs show their dataset's name.

Revision ID: 0006
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_datasets"
down_revision = "0004_prompt_fields"
branch_labels = None
depends_on = None

SCHEMA = "projections"


def upgrade() -> None:
    op.add_column("traces", sa.Column("dataset_id", sa.Text(), nullable=True), schema=SCHEMA)
    op.create_table(
        "datasets",
        sa.Column("project_id", sa.String(200), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("datasets", schema=SCHEMA)
    op.drop_column("traces", "dataset_id", schema=SCHEMA)
