"""Traces and observations: input and output stored as their JSON text (bytea, UTF-8) instead of jsonb. Nothing
queries inside them; reads return them whole. As jsonb each ~1 KB value was parsed twice on the way in (within the
batch's JSON rows, then into the column) and written back out as text on every read; as bytes the server copies
them, and answers embed them as they are. Metadata, usage and cost stay jsonb (filters and metrics read into them).

Existing values are converted to their jsonb text after a space (`` {"a": 1}``): reads parse text that starts
with one as they parsed jsonb before (``views.raw_json``: jsonb printed 1e308 as 309 digits), so answers about
rows stored before stay as they were. Downgrade parses the text back into jsonb.

Also: the index of traces by experiment run keeps only traces of a run (most have none, and every read of it asks
for a run name): one index entry fewer for each other trace. The rewrite keeps the columns' statistics (0010) and compression (0008) settings: set again here.

Revision ID: 0011_payload_bytes
Revises: 0010_payload_statistics
"""

from alembic import op

revision = "0011_payload_bytes"
down_revision = "0010_payload_statistics"
branch_labels = None
depends_on = None

SCHEMA = "projections"
TABLES = ("traces", "observations")
COLUMNS = ("input", "output")


def _settings() -> None:
    for table in TABLES:
        op.execute(f'ALTER TABLE "{SCHEMA}".{table} '
                   + ", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for c in COLUMNS))
    alters = "; ".join(f'ALTER TABLE "{SCHEMA}".{table} ALTER COLUMN {c} SET COMPRESSION lz4'
                       for table in TABLES for c in COLUMNS)
    op.execute(f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
               f"AND 'lz4' = ANY(enumvals)) THEN EXECUTE $a${alters}$a$; END IF; END $$")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f'ALTER TABLE "{SCHEMA}".{table} '
                   + ", ".join(f"ALTER COLUMN {c} TYPE bytea USING convert_to(' ' || CAST({c} AS text), 'UTF8')"
                               for c in COLUMNS))
    _settings()
    _run_index("WHERE dataset_run_name IS NOT NULL")


def _run_index(where: str) -> None:
    op.execute(f'DROP INDEX "{SCHEMA}".ix_traces_project_run')
    op.execute(f'CREATE INDEX ix_traces_project_run ON "{SCHEMA}".traces (project_id, dataset_run_name) {where}')


def downgrade() -> None:
    _run_index("")
    for table in TABLES:
        op.execute(f'ALTER TABLE "{SCHEMA}".{table} '
                   + ", ".join(f"ALTER COLUMN {c} TYPE jsonb USING CAST(convert_from({c}, 'UTF8') AS jsonb)"
                               for c in COLUMNS))
    _settings()
