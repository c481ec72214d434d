"""Traces and observations: on a server without lz4 (the embedded PostgreSQL), rows up to 4 KB are stored as they
are instead of pglz-compressing their JSON until they fit 2 KB. pglz was the largest single cost of writing them
(about a fifth of the backend's CPU on bench/pipeline.py's spans: ~1 KB input, output and metadata each); the
rows take more room (about 1.7x there) and larger rows still compress. Where lz4 is available (0008) compressing
is cheap and stays as it was.

Revision ID: 0009_uncompressed_small_rows
Revises: 0008_scale_out
"""

from alembic import op

revision = "0009_uncompressed_small_rows"
down_revision = "0008_scale_out"
branch_labels = None
depends_on = None

SCHEMA = "projections"
TABLES = ("traces", "observations")
TARGET = 4096


def _where_no_lz4(alters: str) -> None:
    op.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
               f"AND 'lz4' = ANY(enumvals)) THEN EXECUTE $a${alters}$a$; END IF; END $$")


def upgrade() -> None:
    _where_no_lz4("; ".join(f'ALTER TABLE "{SCHEMA}".{t} SET (toast_tuple_target = {TARGET})' for t in TABLES))


def downgrade() -> None:
    for t in TABLES:
        op.execute(f'ALTER TABLE "{SCHEMA}".{t} RESET (toast_tuple_target)')
