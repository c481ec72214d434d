"""The outbox in the shape of ``tally_shared.outbox.outbox_table``: the envelope id as the key, ``seq`` for the
publishing order, what the event is about (project, aggregate).

Revision ID: 0003_shared_outbox
Revises: 0002_trace_deletion
"""

from alembic import op

revision = "0003_shared_outbox"
down_revision = "0002_trace_deletion"
branch_labels = None
depends_on = None

SCHEMA = "queue_router"


def upgrade() -> None:
    # Renames and nullable columns: no rewrite of the (few) rows kept for inspection.
    op.execute(f"DROP INDEX {SCHEMA}.ix_outbox_unsent")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP CONSTRAINT outbox_pkey")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox RENAME COLUMN id TO seq")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox RENAME COLUMN event_id TO id")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ADD PRIMARY KEY (id)")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ADD COLUMN project_id varchar(64)")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ADD COLUMN aggregate_id varchar(200)")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ALTER COLUMN event_type DROP NOT NULL")
    op.execute(f"CREATE INDEX ix_outbox_unsent ON {SCHEMA}.outbox (seq) WHERE sent_at IS NULL")
    op.execute(f"CREATE INDEX ix_outbox_aggregate ON {SCHEMA}.outbox (project_id, aggregate_id)")


def downgrade() -> None:
    op.execute(f"DROP INDEX {SCHEMA}.ix_outbox_aggregate")
    op.execute(f"DROP INDEX {SCHEMA}.ix_outbox_unsent")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP COLUMN aggregate_id")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP COLUMN project_id")
    op.execute(f"UPDATE {SCHEMA}.outbox SET event_type = '' WHERE event_type IS NULL")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ALTER COLUMN event_type SET NOT NULL")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox DROP CONSTRAINT outbox_pkey")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox RENAME COLUMN id TO event_id")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox RENAME COLUMN seq TO id")
    op.execute(f"ALTER TABLE {SCHEMA}.outbox ADD PRIMARY KEY (id)")
    op.execute(f"CREATE INDEX ix_outbox_unsent ON {SCHEMA}.outbox (id) WHERE sent_at IS NULL")
