"""The score rollup keyed by two 64-bit ids instead of its 11 columns of text: (dims_id, bucket, series_id, shard).

Every score upserts several rollup rows (an hourly one, a day row per filter dimension of its trace), and
comparing and indexing the 11-column text key was most of their cost (18-25 µs of PostgreSQL CPU a row, more than
half of the backend's CPU applying a mixed log). The ids are hashed from the text columns
(``domain.rollup.key_id``: the first 8 bytes of the MD5 of the columns joined by NUL); the dimension's id leads the
key, so a dashboard read is one range of the key per filter. The text columns stay in the row for reads.

Revision ID: 0012_rollup_ids
Revises: 0011_payload_bytes
"""

from alembic import op

revision = "0012_rollup_ids"
down_revision = "0011_payload_bytes"
branch_labels = None
depends_on = None

SCHEMA = "projections"
DIMS = ("project_id", "granularity", "dim_kind", "dim_value")
SERIES = (*DIMS, "name", "source", "config_id", "data_type", "value_key")
OLD_KEY = ("project_id", "granularity", "dim_kind", "dim_value", "name", "bucket", "source", "config_id",
           "data_type", "value_key", "shard")


def key_id_sql(columns: tuple[str, ...]) -> str:
    """``domain.rollup.key_id`` of the columns, in SQL."""
    joined = " || '\\x00'::bytea || ".join(f"convert_to({c}, 'UTF8')" for c in columns)
    return f"('x' || left(md5({joined}), 16))::bit(64)::bigint"


def upgrade() -> None:
    t = f'"{SCHEMA}".score_rollup'
    op.execute(f"ALTER TABLE {t} ADD COLUMN dims_id bigint, ADD COLUMN series_id bigint")
    op.execute(f"UPDATE {t} SET dims_id = {key_id_sql(DIMS)}, series_id = {key_id_sql(SERIES)}")  # noqa: S608
    op.execute(f"ALTER TABLE {t} ALTER COLUMN dims_id SET NOT NULL, ALTER COLUMN series_id SET NOT NULL, "
               "DROP CONSTRAINT score_rollup_pkey, "
               "ADD CONSTRAINT score_rollup_pkey PRIMARY KEY (dims_id, bucket, series_id, shard)")


def downgrade() -> None:
    t = f'"{SCHEMA}".score_rollup'
    op.execute(f"ALTER TABLE {t} DROP CONSTRAINT score_rollup_pkey, "
               f"ADD CONSTRAINT score_rollup_pkey PRIMARY KEY ({', '.join(OLD_KEY)})")
    op.execute(f"ALTER TABLE {t} DROP COLUMN dims_id, DROP COLUMN series_id")
