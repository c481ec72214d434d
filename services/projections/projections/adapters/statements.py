"""Every statement the write side runs, built once per schema from the table definitions (a rebuild builds its
own for the shadow schema). Batches travel as one JSON text per statement (``sql.rows_param``), the rows of
the busy tables travel as JSON arrays in column order (``Positional``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from itertools import accumulate, chain, repeat
from operator import add, itemgetter
from typing import Any

import orjson
from sqlalchemy import LargeBinary, Table, text
from sqlalchemy.sql.elements import TextClause

from projections.adapters.tables import Tables
from tally_shared.bulk import ident, insert_sql, pg_type, qualified, select_by_keys, set_excluded

# The merged fields. Append only: a field's position here is its bit in the packed field_ts stored with each row
# (domain.merge.pack_field_ts).
TRACE_FIELDS = ("name", "timestamp", "input", "output", "metadata", "tags", "user_id", "session_id", "release",
                "version", "environment", "public", "dataset_run_name", "dataset_item_id", "dataset_name",
                "dataset_id")
OBS_FIELDS = ("trace_id", "type", "name", "parent_observation_id", "start_time", "end_time",
              "completion_start_time", "level", "status_message", "model", "model_parameters", "usage_details",
              "cost_details", "input", "output", "metadata", "version", "environment", "prompt_name",
              "prompt_version")
SCORE_FIELDS = ("name", "data_type", "value", "string_value", "string_values", "trace_id", "observation_id",
                "session_id", "dataset_run_id", "config_id", "config_version", "comment", "source",
                "author_user_id", "evaluator_name", "evaluator_version", "queue_id", "queue_item_id",
                "environment", "metadata", "timestamp")
_ROLLUP_KEY_TYPES = {"dims_id": "bigint", "bucket": "timestamptz", "series_id": "bigint", "shard": "integer"}
# the columns of a domain.rollup.RollupKey, in its order
ROLLUP_KEY = ("project_id", "granularity", "dim_kind", "dim_value", "name", "bucket", "source", "config_id",
              "data_type", "value_key")


def apply_lock_key(schema: str) -> str:
    """Writers hold it shared for each batch; the rebuild's swap takes it exclusive to stop them all."""
    return f"tally-projections-apply:{schema}"


def upsert_sql(table: Table, columns: Sequence[str], conflict: Sequence[str], update: str | None,
               returning: str | None = None) -> TextClause:
    """``tally_shared.bulk.insert_sql`` with a conflict target; ``update`` None: ``DO NOTHING``."""
    return insert_sql(table, columns, conflict=conflict, update=update, returning=returning)


def set_all(columns: Sequence[str], conflict: Sequence[str]) -> str:
    return set_excluded([c for c in columns if c not in conflict])


def json_default(o: Any) -> Any:
    if isinstance(o, Decimal | uuid.UUID):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Positional:
    """``INSERT ... SELECT ... FROM jsonb_array_elements(:rows)``, each row a JSON array in column order: what
    ``tally_shared.bulk.insert_sql`` does with an array of objects, at about half its cost in PostgreSQL.
    Measured on the bench's batches (backend CPU per row): a score row 13.5 µs through ``json_to_recordset``
    (every object's keys hashed, each JSON column parsed twice, as json then jsonb) against 7 µs positionally, a
    rollup row 4.8 against 2.5. One array per column instead (``unnest``) is cheaper still for PostgreSQL but
    costs the service more than it saves there (asyncpg encodes every array element in turn, ~0.2-1.3 µs each).

    ``bytea`` columns (the JSON texts of inputs and outputs, ``tables.JsonText``) are the exception: their values
    travel concatenated in one ``bytea`` parameter (``raw``), each row's JSON array ending with the (start,
    length) of each, so that PostgreSQL copies those bytes instead of parsing ~1 KB of JSON each into the rows'
    jsonb first. A bytea array per column would cost the service more than the JSON did (asyncpg's per-element
    checks); an empty slice is NULL (a JSON text is never empty). The rows a caller passes hold them as
    ``bytes`` (or None).
    """

    def __init__(self, table: Table, columns: Sequence[str], conflict: Sequence[str], update: str | None,
                 returning: str | None = None) -> None:
        self.columns = tuple(columns)
        types = {c: "bytea" if isinstance(table.c[c].type, LargeBinary) else pg_type(table, c) for c in self.columns}
        self.raw_columns = tuple(c for c in self.columns if types[c] == "bytea")
        self.json_columns = tuple(c for c in self.columns if types[c] != "bytea")
        self._getter = _getter(self.columns)
        self.json_getter = _getter(self.json_columns)
        self.raw_getter = _getter(self.raw_columns) if self.raw_columns else None
        values = []
        i = 0
        raw_at = len(self.json_columns)
        for c in self.columns:
            typ = types[c]
            if typ == "bytea":
                at = raw_at + 2 * self.raw_columns.index(c)
                values.append(f"NULLIF(substring(CAST(:raw AS bytea) FROM CAST(e->>{at} AS integer) "
                              f"FOR CAST(e->>{at + 1} AS integer)), ''::bytea)")
                continue
            if typ == "jsonb":
                # JSON null is SQL NULL, as json_to_recordset gives it
                values.append(f"NULLIF(e->{i}, 'null'::jsonb)")
            elif typ == "json":
                values.append(f"CAST(NULLIF(e->{i}, 'null'::jsonb) AS json)")
            else:
                values.append(f"CAST(e->>{i} AS {typ})")
            i += 1
        sql = (f"INSERT INTO {qualified(table)} AS t ({', '.join(ident(c) for c in self.columns)}) "  # noqa: S608
               f"SELECT {', '.join(values)} FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e "
               f"ON CONFLICT ({', '.join(ident(c) for c in conflict)}) "
               + (f"DO UPDATE SET {update}" if update else "DO NOTHING"))
        if returning:
            sql += f" RETURNING {returning}"
        self.sql = sql
        self.stmt = text(sql)

    def params(self, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The rows as one JSON text (a key a row lacks: NULL), and the ``bytea`` columns' bytes."""
        rows = rows if isinstance(rows, list) else list(rows)
        if self.raw_columns:
            rows = [r if all(c in r for c in self.columns) else {c: r.get(c) for c in self.columns} for r in rows]
            return self.of_rows(rows)
        cols = self.columns
        try:
            values: list[Any] = list(map(self._getter, rows))  # every key there (the usual case): in C
        except KeyError:
            values = [[r.get(c) for c in cols] for r in rows]
        return self.values(values)

    def of_rows(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows that hold every column: the JSON rows, each followed by its ``bytea`` values' (start, length) in
        ``raw``. Those values (any JSON value, or ``bytes``: JSON text already, as stored rows hold them) are
        written by one orjson call for the batch, each followed by a NUL byte (``[v1,\\0,v2,\\0,...]``: JSON text
        never holds one raw), which finds where each ends. A call per value, or splitting the text into one bytes
        object per value, cost the service several times as much: an allocation per ~1 KB value."""
        if self.raw_getter is None:
            return self.values(list(map(self.json_getter, rows)))
        raws = [v for t in map(self.raw_getter, rows) for v in t]
        present = [orjson.Fragment(v) if type(v) is bytes else v for v in raws if v is not None]
        spans: list[tuple[int, int]] = []
        blob = _dumps(list(chain.from_iterable(zip(present, repeat(_END)))))
        find, at = blob.find, 1
        for _ in present:
            end = find(b"\0", at)
            spans.append((at + 1, end - 1 - at))  # substring() counts from 1; a comma before the NUL
            at = end + 2
        if present and at != len(blob):  # a stored text held a NUL byte (not JSON text): each value alone
            texts = [_dumps([v])[1:-1] for v in present]
            blob = b"".join(texts)
            spans = list(zip(accumulate(map(len, texts), initial=1), map(len, texts), strict=False))
        it = iter(spans)
        places = [x for v in raws for x in (next(it) if v is not None else _NULL)]
        per_row = zip(*[iter(places)] * (2 * len(self.raw_columns)), strict=True)
        out = self.values(list(map(add, map(self.json_getter, rows), per_row)))
        out["raw"] = blob
        return out

    @staticmethod
    def values(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """Rows already in column order. Written without ``OPT_NON_STR_KEYS`` first (a fifth cheaper: every dict's
        keys are then taken as they are), and with it when some dict has a key that is not a string."""
        return {"rows": _dumps(rows).decode()}


_END = orjson.Fragment(b"\0")
_NULL = (1, 0)  # an empty slice: NULL


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=json_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS)


def _getter(columns: Sequence[str]) -> Callable[[dict[str, Any]], Any]:
    if len(columns) > 1:
        return itemgetter(*columns)
    col = columns[0]
    return lambda r: (r[col],)


class Statements:
    def __init__(self, tables: Tables) -> None:
        t = self.t = tables
        self.lock_key = apply_lock_key(tables.schema)
        self.trace_cols = ["project_id", "id", *TRACE_FIELDS, "field_ts", "created_at", "updated_at", "sort_ts"]
        self.obs_cols = ["project_id", "id", *OBS_FIELDS, "field_ts", "created_at", "updated_at"]
        self.score_cols = ["project_id", "id", *SCORE_FIELDS, "deleted", "event_ts", "created_at", "updated_at",
                           "rolled_dims"]
        pk2 = ["project_id", "id"]
        # Traces and observations are inserted optimistically (most are new): only the keys that were already
        # there come back from ``*_new`` and go through select + merge + ``*_up``.
        self.traces_new = Positional(t.traces, self.trace_cols, pk2, None, returning="t.project_id, t.id")
        self.traces_up = Positional(t.traces, self.trace_cols, pk2, set_all(self.trace_cols, pk2))
        self.sql_traces_get = select_by_keys(t.traces, pk2)
        self.sql_datasets_up = upsert_sql(t.datasets, ["project_id", "id", "name"], pk2, set_all(["name"], []))
        self.obs_new = Positional(t.observations, self.obs_cols, pk2, None, returning="t.project_id, t.id")
        self.obs_up = Positional(t.observations, self.obs_cols, pk2, set_all(self.obs_cols, pk2))
        self.sql_obs_get = select_by_keys(t.observations, pk2)
        self.scores_up = Positional(t.scores, self.score_cols, pk2, set_all(self.score_cols, pk2))
        self.sql_scores_get = select_by_keys(t.scores, pk2)
        self.sql_tombstones_get = select_by_keys(t.deleted_traces, pk2, pk2)
        self.sql_trace_dims = select_by_keys(
            t.traces, pk2, ["project_id", "id", "name", "environment", "release", "user_id", "tags"]
        )
        sc = qualified(t.scores)
        # Only what re-counting needs (no JSON payloads), and not the scores this batch just wrote: they were
        # counted under the trace's current dimensions already.
        self.sql_scores_of_traces = text(
            f"SELECT s.project_id, s.id, s.trace_id, s.name, s.data_type, s.value, s.string_value, "  # noqa: S608
            f"s.string_values, s.source, s.config_id, s.environment, s.timestamp, s.deleted, "
            # as text: a trace's scores share it, so it is parsed once per trace, not once per score
            f"CAST(s.rolled_dims AS text) AS rolled_dims_json "
            f"FROM {sc} s WHERE s.project_id = ANY(CAST(:project_id AS text[])) "
            f"AND s.trace_id = ANY(CAST(:trace_id AS text[])) AND NOT s.deleted "
            f"AND NOT (s.id = ANY(CAST(:skip AS text[])))"
        )
        self.sql_set_dims = text(
            f"UPDATE {sc} s SET rolled_dims = u.d::jsonb FROM unnest(CAST(:project_id AS text[]), "  # noqa: S608
            f"CAST(:id AS text[]), CAST(:d AS text[])) AS u(project_id, id, d) "
            f"WHERE s.project_id = u.project_id AND s.id = u.id"
        )
        rk = ["dims_id", "bucket", "series_id", "shard"]
        self.rollup_key_cols = rk
        self.rollup_up = Positional(
            t.score_rollup, ["dims_id", "series_id", *ROLLUP_KEY, "shard", "n", "n_value", "sum", "sum_sq"], rk,
            "n = t.n + EXCLUDED.n, n_value = t.n_value + EXCLUDED.n_value, sum = t.sum + EXCLUDED.sum, "
            "sum_sq = t.sum_sq + EXCLUDED.sum_sq",
            returning="t.n = 0 AND t.n_value = 0 AS empty, " + ", ".join(f"t.{ident(c)}" for c in rk),
        )
        # only the rows that came to nothing travel back (to be deleted), not one per row written
        self.sql_rollup_up = text(f"WITH up AS ({self.rollup_up.sql}) SELECT * FROM up WHERE empty")  # noqa: S608
        rq = qualified(t.score_rollup)
        self.sql_rollup_del = text(
            f"DELETE FROM {rq} r USING unnest("  # noqa: S608
            + ", ".join(f"CAST(:{c} AS {_ROLLUP_KEY_TYPES[c]}[])" for c in rk)
            + f") AS k({', '.join(rk)}) WHERE "
            + " AND ".join(f"r.{ident(c)} = k.{ident(c)}" for c in rk)
            + " AND r.n = 0 AND r.n_value = 0"
        )
        cfg_cols = ["project_id", "id", "version", "name", "data_type", "data", "is_archived", "event_ts"]
        self.cfg_cols = cfg_cols
        self.sql_cfg_up = text(
            upsert_sql(t.score_configs, cfg_cols, pk2, set_all(cfg_cols, pk2)).text
            + " WHERE (EXCLUDED.version, EXCLUDED.event_ts) >= (t.version, t.event_ts)"
        )
        q_cols = ["project_id", "id", "name", "data", "created", "event_ts"]
        self.q_cols = q_cols
        self.sql_queue_up = upsert_sql(
            t.queues, q_cols, pk2,
            "name = CASE WHEN EXCLUDED.event_ts >= t.event_ts THEN EXCLUDED.name ELSE t.name END, "
            "data = CASE WHEN EXCLUDED.event_ts >= t.event_ts THEN EXCLUDED.data ELSE t.data END, "
            "event_ts = GREATEST(t.event_ts, EXCLUDED.event_ts), created = t.created OR EXCLUDED.created",
        )
        self.sql_queue_placeholder = upsert_sql(t.queues, q_cols, pk2, None)
        i_cols = ["project_id", "queue_id", "item_id", "object_type", "object_id", "trace_id", "reason", "rule_id",
                  "added_at", "first_leased_at", "completed_at", "removed_at", "flagged_at", "last_event_at"]
        self.i_cols = i_cols
        self.sql_items_up = upsert_sql(
            t.queue_items, i_cols, ["project_id", "queue_id", "item_id"],
            "trace_id = COALESCE(t.trace_id, EXCLUDED.trace_id), "
            "reason = CASE WHEN EXCLUDED.added_at IS NOT NULL AND (t.added_at IS NULL OR EXCLUDED.added_at < "
            "t.added_at) THEN EXCLUDED.reason ELSE t.reason END, "
            "rule_id = CASE WHEN EXCLUDED.added_at IS NOT NULL AND (t.added_at IS NULL OR EXCLUDED.added_at < "
            "t.added_at) THEN EXCLUDED.rule_id ELSE t.rule_id END, "
            "added_at = LEAST(t.added_at, EXCLUDED.added_at), "
            "first_leased_at = LEAST(t.first_leased_at, EXCLUDED.first_leased_at), "
            "completed_at = LEAST(t.completed_at, EXCLUDED.completed_at), "
            "removed_at = LEAST(t.removed_at, EXCLUDED.removed_at), "
            "flagged_at = LEAST(t.flagged_at, EXCLUDED.flagged_at), "
            "last_event_at = GREATEST(t.last_event_at, EXCLUDED.last_event_at)",
        )
        r_cols = ["project_id", "queue_id", "item_id", "reviewer", "leased_at", "completed_at", "skipped_at",
                  "skip_reason", "flagged_at", "flag_reason", "last_leased_at", "last_ended_at", "last_skipped_at",
                  "skip_undone_at"]
        self.r_cols = r_cols
        self.sql_reviews_up = upsert_sql(
            t.queue_reviews, r_cols, ["project_id", "queue_id", "item_id", "reviewer"],
            "leased_at = LEAST(t.leased_at, EXCLUDED.leased_at), "
            "completed_at = LEAST(t.completed_at, EXCLUDED.completed_at), "
            "skip_reason = CASE WHEN EXCLUDED.skipped_at IS NOT NULL AND (t.skipped_at IS NULL OR "
            "EXCLUDED.skipped_at < t.skipped_at) THEN EXCLUDED.skip_reason ELSE t.skip_reason END, "
            "skipped_at = LEAST(t.skipped_at, EXCLUDED.skipped_at), "
            "flag_reason = CASE WHEN EXCLUDED.flagged_at IS NOT NULL AND (t.flagged_at IS NULL OR "
            "EXCLUDED.flagged_at < t.flagged_at) THEN EXCLUDED.flag_reason ELSE t.flag_reason END, "
            "flagged_at = LEAST(t.flagged_at, EXCLUDED.flagged_at), "
            "last_leased_at = GREATEST(t.last_leased_at, EXCLUDED.last_leased_at), "
            "last_ended_at = GREATEST(t.last_ended_at, EXCLUDED.last_ended_at), "
            "last_skipped_at = GREATEST(t.last_skipped_at, EXCLUDED.last_skipped_at), "
            "skip_undone_at = GREATEST(t.skip_undone_at, EXCLUDED.skip_undone_at)",
        )
        self.sql_tombstone_up = upsert_sql(t.deleted_traces, ["project_id", "id", "deleted_at"], pk2,
                                           "deleted_at = LEAST(t.deleted_at, EXCLUDED.deleted_at)")
