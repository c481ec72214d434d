"""Traces and observations: no planner statistics for the JSON payloads (input, output, field_ts). No query
filters or joins on them, yet ANALYZE (autovacuum's, after every burst of traces) detoasted and hashed a sample of
them: on the embedded PostgreSQL it was the largest server cost after the statements themselves (0.5 s of CPU for
22,000 observations at the default target).

Revision ID: 0010_payload_statistics
Revises: 0009_uncompressed_small_rows
"""

from alembic import op

revision = "0010_payload_statistics"
down_revision = "0009_uncompressed_small_rows"
branch_labels = None
depends_on = None

SCHEMA = "projections"
COLUMNS = {"traces": ("input", "output", "field_ts"), "observations": ("input", "output", "field_ts")}


def _set(target: int) -> None:
    for table, columns in COLUMNS.items():
        op.execute(f'ALTER TABLE "{SCHEMA}".{table} '
                   + ", ".join(f"ALTER COLUMN {c} SET STATISTICS {target}" for c in columns))


def upgrade() -> None:
    _set(0)


def downgrade() -> None:
    _set(-1)
