"""Trace summaries as one document: what rules read of a trace (and the merge state) in a ``doc`` column of
bytes (JSON written by the router), beside the columns SQL reads (project, trace, has_trace, timestamp).

Only the router reads a summary, always whole, so its 17 typed columns (two JSONB, three arrays) cost the server
parsing and converting on every write for nothing: a batch's summaries are now sent as arrays (one a column) and
stored as they come. Existing rows are converted in place (keeping the aggregates they were stored with; the
router writes only the trace fields and the merge state, and computes the aggregates from the state when it reads).

``ix_summaries_project_time`` goes: the only reader that filters on time (preview and backfill) orders by
``coalesce(timestamp, first_seen_at)``, which that index cannot serve, and the primary key already leads with the
project; it was one index entry more to write per summary.

Revision ID: 0004_summary_doc
Revises: 0003_shared_outbox
"""

from alembic import op

revision = "0004_summary_doc"
down_revision = "0003_shared_outbox"
branch_labels = None
depends_on = None

SCHEMA = "queue_router"
T = f"{SCHEMA}.trace_summaries"
# (column, its SQL type): the fields now kept in ``doc``, under the same names.
FIELDS = (("name", "text"), ("tags", "text[]"), ("metadata", "jsonb"), ("environment", "text"),
          ("release", "text"), ("user_id", "text"), ("session_id", "text"), ("dataset_run_name", "text"),
          ("has_error", "boolean"), ("latency", "double precision"), ("total_cost", "double precision"),
          ("input_tokens", "double precision"), ("output_tokens", "double precision"),
          ("total_tokens", "double precision"), ("observation_types", "text[]"), ("observation_names", "text[]"),
          ("state", "jsonb"))


def upgrade() -> None:
    op.execute(f"ALTER TABLE {T} ADD COLUMN doc bytea")
    pairs = ", ".join(f"'{c}', {c}" for c, _ in FIELDS)
    op.execute(f"UPDATE {T} SET doc = convert_to(json_build_object({pairs})::text, 'UTF8')")
    op.execute(f"ALTER TABLE {T} ALTER COLUMN doc SET NOT NULL")
    op.execute(f"ALTER TABLE {T} " + ", ".join(f"DROP COLUMN {c}" for c, _ in FIELDS))
    op.execute(f"DROP INDEX {SCHEMA}.ix_summaries_project_time")


def downgrade() -> None:
    op.execute(f"CREATE INDEX ix_summaries_project_time ON {T} (project_id, timestamp)")
    op.execute(f"ALTER TABLE {T} " + ", ".join(f"ADD COLUMN {c} {t}" for c, t in FIELDS))
    sets = []
    for c, t in FIELDS:
        if t == "jsonb":
            sets.append(f"{c} = NULLIF(j->'{c}', 'null'::jsonb)")
        elif t == "text[]":
            sets.append(f"{c} = CASE WHEN jsonb_typeof(j->'{c}') = 'array' THEN "
                        f"ARRAY(SELECT jsonb_array_elements_text(j->'{c}')) END")
        else:
            sets.append(f"{c} = CAST(j->>'{c}' AS {t})")
    op.execute(f"UPDATE {T} SET {', '.join(sets)} "
               f"FROM (SELECT project_id AS p, trace_id AS i, convert_from(doc, 'UTF8')::jsonb AS j FROM {T}) d "
               f"WHERE project_id = d.p AND trace_id = d.i")
    op.execute(f"UPDATE {T} SET has_error = coalesce(has_error, false), state = coalesce(state, '{{}}'::jsonb)")
    op.execute(f"ALTER TABLE {T} ALTER COLUMN has_error SET DEFAULT false, ALTER COLUMN has_error SET NOT NULL, "
               "ALTER COLUMN state SET DEFAULT '{}'::jsonb, ALTER COLUMN state SET NOT NULL")
    op.execute(f"ALTER TABLE {T} DROP COLUMN doc")
