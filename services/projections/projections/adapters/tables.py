"""The read-model tables. Built per schema so that a rebuild can write the same tables into a shadow schema.

Every column is derived from events only (never ``now()``), so that a rebuild from the log reproduces the live
tables row for row. Timestamps of the events that set each field are kept in ``field_ts`` (epoch microseconds of
the envelope's ``occurred_at``) for per-field last-write-wins, packed as ``[ts, field mask, ...]``
(``domain.merge.pack_field_ts``; rows written before that hold a field -> ts object, read either way).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tally_shared.claims import processed_events_table

TS = DateTime(timezone=True)
# Inputs and outputs of traces and observations: the JSON text as written (UTF-8), never parsed by PostgreSQL. Reads
# only ever return them whole (no query filters on them), so the server neither parses them into jsonb on the way
# in nor writes them back out as text, and answers embed the stored bytes as they are (``views.raw_json``).
JsonText = LargeBinary


@dataclass(frozen=True)
class Tables:
    schema: str
    metadata: MetaData
    processed: Table
    traces: Table
    observations: Table
    scores: Table
    score_configs: Table
    score_rollup: Table
    queues: Table
    queue_items: Table
    queue_reviews: Table
    datasets: Table
    deleted_traces: Table

    def all(self) -> list[Table]:
        return [
            self.processed, self.traces, self.observations, self.scores, self.score_configs, self.score_rollup,
            self.queues, self.queue_items, self.queue_reviews, self.datasets, self.deleted_traces,
        ]


def make_tables(schema: str) -> Tables:
    md = MetaData(schema=schema)
    processed = processed_events_table(md)

    traces = Table(
        "traces", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("name", Text),
        Column("timestamp", TS),
        Column("input", JsonText),
        Column("output", JsonText),
        Column("metadata", JSONB),
        Column("tags", JSONB),
        Column("user_id", Text),
        Column("session_id", Text),
        Column("release", Text),
        Column("version", Text),
        Column("environment", Text),
        Column("public", Boolean),
        Column("dataset_run_name", Text),
        Column("dataset_item_id", Text),
        Column("dataset_name", Text),
        Column("dataset_id", Text),
        Column("field_ts", JSONB, nullable=False),
        Column("created_at", TS, nullable=False),
        Column("updated_at", TS, nullable=False),
        # the trace's timestamp, or when it was first seen: what lists sort and filter by
        Column("sort_ts", TS),
        Index("ix_traces_sort", "project_id", "sort_ts", "id"),
        # only experiment traces: every read of it asks for a run name (IS NOT NULL, =, IN), and most traces have none
        Index("ix_traces_project_run", "project_id", "dataset_run_name",
              postgresql_where=text("dataset_run_name IS NOT NULL")),
        Index("ix_traces_tags", "tags", postgresql_using="gin"),
        Index("ix_traces_session", "project_id", "session_id"),
    )

    observations = Table(
        "observations", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("trace_id", String(200), nullable=False),
        Column("type", Text),
        Column("name", Text),
        Column("parent_observation_id", Text),
        Column("start_time", TS),
        Column("end_time", TS),
        Column("completion_start_time", TS),
        Column("level", Text),
        Column("status_message", Text),
        Column("model", Text),
        Column("model_parameters", JSONB),
        Column("usage_details", JSONB),
        Column("cost_details", JSONB),
        Column("input", JsonText),
        Column("output", JsonText),
        Column("metadata", JSONB),
        Column("version", Text),
        Column("environment", Text),
        Column("field_ts", JSONB, nullable=False),
        Column("created_at", TS, nullable=False),
        Column("updated_at", TS, nullable=False),
        Column("prompt_name", Text),
        Column("prompt_version", Integer),
        Index("ix_observations_trace", "project_id", "trace_id"),
        Index("ix_observations_start", "project_id", "start_time", "id"),
    )

    scores = Table(
        "scores", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("name", Text, nullable=False),
        Column("data_type", String(20), nullable=False),
        Column("value", Float),
        Column("string_value", Text),
        Column("string_values", JSONB),
        Column("trace_id", String(200)),
        Column("observation_id", String(200)),
        Column("session_id", String(200)),
        Column("dataset_run_id", String(200)),
        Column("config_id", String(200)),
        Column("config_version", Integer),
        Column("comment", Text),
        Column("source", String(20), nullable=False),
        Column("author_user_id", Text),
        Column("evaluator_name", Text),
        Column("evaluator_version", Text),
        Column("queue_id", String(200)),
        Column("queue_item_id", String(200)),
        Column("environment", Text),
        Column("metadata", JSONB),
        Column("timestamp", TS, nullable=False),
        Column("deleted", Boolean, nullable=False),
        # occurred_at of the event that set the current state (whole-row last-write-wins, tombstones included)
        Column("event_ts", BigInteger, nullable=False),
        Column("created_at", TS, nullable=False),
        Column("updated_at", TS, nullable=False),
        # the trace dimensions this score is counted under in score_rollup (see domain.rollup)
        Column("rolled_dims", JSONB),
        Index("ix_scores_trace", "project_id", "trace_id"),
        Index("ix_scores_name_ts", "project_id", "name", "timestamp"),
        Index("ix_scores_config", "project_id", "config_id"),
    )

    score_configs = Table(
        "score_configs", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("name", Text, nullable=False),
        Column("data_type", String(20), nullable=False),
        Column("data", JSONB, nullable=False),
        Column("is_archived", Boolean, nullable=False),
        Column("event_ts", BigInteger, nullable=False),
    )

    # Pre-aggregated score counts: one row per (bucket, series, filter dimension, value, shard). A score adds to the
    # unfiltered row (dim_kind '') and to one row per dimension value of its trace (name, environment, release,
    # user, each tag), at hour and at day granularity. Sums are NUMERIC so any application order gives the same
    # totals (a rebuild equals the live table exactly). Keyed by ids hashed from the text columns
    # (``domain.rollup.row_ids``): the dimension's first, so a dashboard read is one range of the key per filter.
    score_rollup = Table(
        "score_rollup", md,
        Column("dims_id", BigInteger, primary_key=True),
        Column("bucket", TS, primary_key=True),
        Column("series_id", BigInteger, primary_key=True),
        # the partition the deltas came from: replicas own partitions, so none write another's rows; reads sum
        Column("shard", Integer, primary_key=True, server_default="0"),
        Column("project_id", String(200), nullable=False),
        Column("granularity", String(5), nullable=False),
        Column("dim_kind", String(20), nullable=False),
        Column("dim_value", Text, nullable=False),
        Column("name", Text, nullable=False),
        Column("source", String(20), nullable=False),
        Column("config_id", String(200), nullable=False),
        Column("data_type", String(20), nullable=False),
        Column("value_key", Text, nullable=False),
        Column("n", BigInteger, nullable=False),
        Column("n_value", BigInteger, nullable=False),
        Column("sum", Numeric, nullable=False),
        Column("sum_sq", Numeric, nullable=False),
    )

    queues = Table(
        "queues", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("name", Text),
        Column("data", JSONB),
        Column("created", Boolean, nullable=False),
        Column("event_ts", BigInteger, nullable=False),
    )

    queue_items = Table(
        "queue_items", md,
        Column("project_id", String(200), primary_key=True),
        Column("queue_id", String(200), primary_key=True),
        Column("item_id", String(200), primary_key=True),
        Column("object_type", String(20), nullable=False),
        Column("object_id", String(200), nullable=False),
        Column("trace_id", String(200)),
        Column("reason", Text),
        Column("rule_id", Text),
        Column("added_at", TS),
        Column("first_leased_at", TS),
        Column("completed_at", TS),
        Column("removed_at", TS),
        Column("flagged_at", TS),
        Column("last_event_at", TS, nullable=False),
        Index("ix_queue_items_trace", "project_id", "trace_id"),
        Index("ix_queue_items_object", "project_id", "object_id"),
    )

    queue_reviews = Table(
        "queue_reviews", md,
        Column("project_id", String(200), primary_key=True),
        Column("queue_id", String(200), primary_key=True),
        Column("item_id", String(200), primary_key=True),
        Column("reviewer", String(200), primary_key=True),
        Column("leased_at", TS),
        Column("completed_at", TS),
        Column("skipped_at", TS),
        Column("skip_reason", Text),
        Column("flagged_at", TS),
        Column("flag_reason", Text),
        # Latest lease start and end (release, expiry, skip, flag, completion): the lease is live while the start
        # is later than the end. Merged with GREATEST, so events may arrive in any order.
        Column("last_leased_at", TS),
        Column("last_ended_at", TS),
        Column("last_skipped_at", TS),
        Column("skip_undone_at", TS),
        Index("ix_queue_reviews_done", "project_id", "queue_id", "completed_at"),
    )

    # Dataset id -> name, so that experiment runs linked by dataset id show their dataset's name.
    datasets = Table(
        "datasets", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("name", Text, nullable=False),
    )

    # Tombstones of deleted traces: events about a deleted trace that arrive later (from another topic, or on a
    # rebuild in another interleaving) are dropped, so a deletion is final whatever the order.
    deleted_traces = Table(
        "deleted_traces", md,
        Column("project_id", String(200), primary_key=True),
        Column("id", String(200), primary_key=True),
        Column("deleted_at", TS, nullable=False),
    )

    return Tables(schema, md, processed, traces, observations, scores, score_configs, score_rollup, queues,
                  queue_items, queue_reviews, datasets, deleted_traces)
