"""Replicas write side by side: the score rollup gets a shard column (the partition a delta came from), so two
replicas never update the same rollup row; reads already sum over everything but the series, bucket and value.
Also: the trace timestamp index served no read (lists and metrics use sort_ts), and the large JSON columns are
compressed with lz4, much cheaper to write than the default pglz.

Revision ID: 0008_scale_out
Revises: 0007_review_workflow
"""

from alembic import op

revision = "0008_scale_out"
down_revision = "0007_review_workflow"
branch_labels = None
depends_on = None

SCHEMA = "projections"
ROLLUP_KEY = ("project_id", "granularity", "dim_kind", "dim_value", "name", "bucket", "source", "config_id",
              "data_type", "value_key")
LZ4 = {"traces": ("input", "output", "metadata"), "observations": ("input", "output", "metadata")}


def upgrade() -> None:
    op.execute(f'ALTER TABLE "{SCHEMA}".score_rollup ADD COLUMN shard integer NOT NULL DEFAULT 0')
    op.execute(f'ALTER TABLE "{SCHEMA}".score_rollup DROP CONSTRAINT score_rollup_pkey, '
               f'ADD CONSTRAINT score_rollup_pkey PRIMARY KEY ({", ".join(ROLLUP_KEY)}, shard)')
    op.execute(f'DROP INDEX IF EXISTS "{SCHEMA}".ix_traces_project_ts')
    _compression("lz4")


def _compression(method: str) -> None:
    # only where the server was built with lz4 (the embedded PostgreSQL may not be)
    alters = "; ".join(f'ALTER TABLE "{SCHEMA}".{table} ALTER COLUMN {col} SET COMPRESSION {method}'
                       for table, cols in LZ4.items() for col in cols)
    op.execute(f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
               f"AND 'lz4' = ANY(enumvals)) THEN EXECUTE $a${alters}$a$; END IF; END $$")


def downgrade() -> None:
    _compression("pglz")
    op.execute(f'CREATE INDEX ix_traces_project_ts ON "{SCHEMA}".traces (project_id, timestamp)')
    # folds the shards back into one row per key
    keys = ", ".join(ROLLUP_KEY)
    op.execute(f'CREATE TEMP TABLE rollup_sum ON COMMIT DROP AS SELECT {keys}, sum(n) AS n, '  # noqa: S608
               f'sum(n_value) AS n_value, sum(sum) AS sum, sum(sum_sq) AS sum_sq FROM "{SCHEMA}".score_rollup '
               f'GROUP BY {keys}')
    op.execute(f'DELETE FROM "{SCHEMA}".score_rollup')
    op.execute(f'ALTER TABLE "{SCHEMA}".score_rollup DROP CONSTRAINT score_rollup_pkey, '
               f'ADD CONSTRAINT score_rollup_pkey PRIMARY KEY ({keys})')
    op.execute(f'ALTER TABLE "{SCHEMA}".score_rollup DROP COLUMN shard')
    op.execute(f'INSERT INTO "{SCHEMA}".score_rollup ({keys}, n, n_value, sum, sum_sq) '  # noqa: S608
               f'SELECT {keys}, n, n_value, sum, sum_sq FROM rollup_sum WHERE n <> 0 OR n_value <> 0')
