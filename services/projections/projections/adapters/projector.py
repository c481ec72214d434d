"""Applies a batch of events to the read models in one transaction, with bulk statements.

Order inside a batch: claim the event ids (a redelivery changes nothing), merge traces and observations per field,
apply score states (whole-row last-write-wins, tombstones for deletions) and their rollup deltas, re-count the
scores of traces whose filter dimensions changed, then configs and queues. Every step either merges by event time
or only adds and subtracts, so the result does not depend on how events from different topics interleave: a
rebuild from the log gives the same tables.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import delete, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters.sql import ident, jdump, qualified, rows_param, select_by_keys, set_all, upsert_sql
from projections.adapters.tables import Tables
from projections.domain.merge import merge_fields, to_micros
from projections.domain.rollup import Measures, RollupKey, add_to, contributions, trace_dims
from tally_shared.envelope import Envelope, Payload
from tally_shared.events import (
    DatasetCreated,
    DatasetItemDeleted,
    DatasetItemUpserted,
    DatasetRunDeleted,
    DatasetRunItemCreated,
    DatasetUpdated,
    QueueCreated,
    QueueItemAdded,
    QueueItemCompleted,
    QueueItemFlagged,
    QueueItemLeased,
    QueueItemLeaseExpired,
    QueueItemReleased,
    QueueItemRemoved,
    QueueItemSkipped,
    QueueItemSkipUndone,
    QueueUpdated,
    ScoreConfigArchived,
    ScoreConfigCreated,
    ScoreConfigUpdated,
    ScoreDeleted,
    ScoreRecorded,
    ScoreUpdated,
    TraceData,
    TraceDeleted,
    TraceIngested,
)

CONSUMER = "projections"
log = logging.getLogger(__name__)
SKIPPED = Counter("tally_projections_skipped_total", "Events that can never fit the read models (ids too long)")

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
DIM_FIELDS = frozenset({"name", "environment", "release", "user_id", "tags"})



def apply_lock_key(schema: str) -> str:
    return f"tally-projections-apply:{schema}"


async def _by_keys(session: AsyncSession, stmt: Any, keys: Iterable[tuple[str, str]]
                   ) -> dict[tuple[str, str], dict[str, Any]]:
    wanted = set(keys)
    if not wanted:
        return {}
    res = await session.execute(stmt, {"project_id": sorted({k[0] for k in wanted}),
                                       "id": sorted({k[1] for k in wanted})})
    out = {}
    for r in res.mappings():
        key = (r["project_id"], r["id"])
        if key in wanted:
            out[key] = dict(r)
    return out


MAX_KEY = 200  # key columns are String(200): a longer id would fail the whole batch on every redelivery


def _oversized(env: Envelope, p: Payload) -> bool:
    """An event whose keys do not fit the tables can never be applied; it is recorded as processed (its id is
    claimed) and skipped, rather than failing its batch forever."""
    keys: list[str | None] = [env.project]
    if isinstance(p, ScoreRecorded | ScoreUpdated):
        d = p.score
        keys += [d.id, d.trace_id, d.observation_id, d.session_id, d.dataset_run_id, d.config_id, d.queue_id,
                 d.queue_item_id]
    elif isinstance(p, ScoreDeleted):
        keys += [p.score_id, p.trace_id]
    elif isinstance(p, ScoreConfigCreated | ScoreConfigUpdated | ScoreConfigArchived):
        keys.append(p.config.id)
    elif isinstance(p, QueueCreated | QueueUpdated):
        keys.append(p.queue.id)
    elif isinstance(p, DatasetCreated):
        keys.append(p.dataset.id)
    elif isinstance(p, DatasetRunItemCreated):
        keys += [p.run_item.trace_id, p.run_item.dataset_id]
    elif isinstance(p, DatasetItemUpserted | DatasetItemDeleted | DatasetRunDeleted | DatasetUpdated):
        pass  # not applied here
    elif isinstance(p, TraceDeleted):
        keys.append(p.trace_id)
    elif not isinstance(p, TraceIngested):
        ref = getattr(p, "item", None)
        if ref is not None:
            keys += [ref.queue_id, ref.item_id, ref.object_id, ref.trace_id, getattr(p, "reviewer", None)]
    bad = any(k is not None and len(k) > MAX_KEY for k in keys)
    if bad:
        SKIPPED.inc()
        log.warning("skipping %s %s: an id is longer than %d characters", env.type, env.id, MAX_KEY)
    return bad


def run_item_link(p: DatasetRunItemCreated) -> TraceIngested:
    """A run item recorded through the datasets API is the same experiment link as ingest's
    ``dataset-run-item-create``: a partial update of its trace, merged per field like any other."""
    ri = p.run_item
    return TraceIngested(trace_id=ri.trace_id, source="datasets", trace=TraceData(
        id=ri.trace_id, dataset_run_name=ri.run_name, dataset_item_id=ri.dataset_item_id, dataset_id=ri.dataset_id,
        dataset_name=ri.dataset_name))


def _trace_of(p: Payload) -> str | None:
    if isinstance(p, ScoreDeleted):
        return p.trace_id
    score = getattr(p, "score", None)
    return score.trace_id if score is not None else None


def _queue_event_of(env: Envelope, p: Payload, gone: set[tuple[str, str]]) -> bool:
    """Whether a queue event is about an item of a deleted trace (its item is gone with the trace)."""
    ref = getattr(p, "item", None)
    return ref is not None and any((env.project, tid) in gone for tid in (ref.trace_id, ref.object_id) if tid)


class Projector:
    def __init__(self, tables: Tables) -> None:
        t = self.t = tables
        self.lock_key = apply_lock_key(tables.schema)
        self.trace_cols = ["project_id", "id", *TRACE_FIELDS, "field_ts", "created_at", "updated_at", "sort_ts"]
        self.obs_cols = ["project_id", "id", *OBS_FIELDS, "field_ts", "created_at", "updated_at"]
        self.score_cols = ["project_id", "id", *SCORE_FIELDS, "deleted", "event_ts", "created_at", "updated_at",
                           "rolled_dims"]
        pk2 = ["project_id", "id"]
        self.sql_claim = text(
            f"INSERT INTO {qualified(t.processed)} (consumer, event_id) "
            f"SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING RETURNING event_id"
        )
        self.sql_traces_up = upsert_sql(t.traces, self.trace_cols, pk2, set_all(self.trace_cols, pk2))
        self.sql_traces_get = select_by_keys(t.traces, pk2)
        self.sql_datasets_up = upsert_sql(t.datasets, ["project_id", "id", "name"], pk2, set_all(["name"], []))
        self.sql_obs_up = upsert_sql(t.observations, self.obs_cols, pk2, set_all(self.obs_cols, pk2))
        self.sql_obs_get = select_by_keys(t.observations, pk2)
        self.sql_scores_up = upsert_sql(t.scores, self.score_cols, pk2, set_all(self.score_cols, pk2))
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
            f"s.string_values, s.source, s.config_id, s.environment, s.timestamp, s.deleted, s.rolled_dims "
            f"FROM {sc} s WHERE s.project_id = ANY(CAST(:project_id AS text[])) "
            f"AND s.trace_id = ANY(CAST(:trace_id AS text[])) AND NOT s.deleted "
            f"AND NOT (s.id = ANY(CAST(:skip AS text[])))"
        )
        self.sql_set_dims = text(
            f"UPDATE {sc} s SET rolled_dims = u.d::jsonb FROM unnest(CAST(:project_id AS text[]), "  # noqa: S608
            f"CAST(:id AS text[]), CAST(:d AS text[])) AS u(project_id, id, d) "
            f"WHERE s.project_id = u.project_id AND s.id = u.id"
        )
        rk = ["project_id", "granularity", "dim_kind", "dim_value", "name", "bucket", "source", "config_id",
              "data_type", "value_key"]
        self.rollup_key_cols = rk
        self.sql_rollup_up = upsert_sql(
            t.score_rollup, [*rk, "n", "n_value", "sum", "sum_sq"], rk,
            "n = t.n + EXCLUDED.n, n_value = t.n_value + EXCLUDED.n_value, sum = t.sum + EXCLUDED.sum, "
            "sum_sq = t.sum_sq + EXCLUDED.sum_sq",
            returning="t.n = 0 AND t.n_value = 0 AS empty, " + ", ".join(f"t.{ident(c)}" for c in rk),
        )
        rq = qualified(t.score_rollup)
        self.sql_rollup_del = text(
            f"DELETE FROM {rq} r USING unnest("  # noqa: S608
            + ", ".join(f"CAST(:{c} AS {'timestamptz' if c == 'bucket' else 'text'}[])" for c in rk)
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

    async def apply(self, session: AsyncSession, batch: Sequence[tuple[Envelope, Payload]]) -> list[Envelope]:
        """Apply the events not applied before; returns those envelopes. Call inside a transaction."""
        if not batch:
            return []
        # One writer per schema at a time: no lost updates or deadlocks between replicas, and the rebuild's swap
        # takes the same lock to stop the live writer while it moves tables.
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": self.lock_key})
        # Plan each lookup for its actual key arrays: a generic plan cached while a table was small (or never
        # analysed: autovacuum may be off) can turn the batch's key lookups into a scan per key.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        ids = sorted({env.id for env, _ in batch})
        fresh: set[uuid.UUID] = {
            r[0] for r in (await session.execute(self.sql_claim, {"consumer": CONSUMER, "ids": ids})).all()
        }
        todo: list[tuple[Envelope, Payload]] = []
        for env, payload in batch:
            if env.id in fresh:
                fresh.discard(env.id)
                todo.append((env, payload))
        if not todo:
            return []
        todo = [(env, p) for env, p in todo if not _oversized(env, p)]
        traces_in: list[tuple[Envelope, TraceIngested]] = []
        scores_in: list[tuple[Envelope, Payload]] = []
        configs_in: list[tuple[Envelope, Payload]] = []
        queues_in: list[tuple[Envelope, Payload]] = []
        datasets_in: list[tuple[Envelope, DatasetCreated]] = []
        deletes_in: list[tuple[Envelope, TraceDeleted]] = []
        for env, p in todo:
            if isinstance(p, TraceIngested):
                traces_in.append((env, p))
            elif isinstance(p, DatasetRunItemCreated):
                traces_in.append((env, run_item_link(p)))
            elif isinstance(p, DatasetCreated):
                datasets_in.append((env, p))
            elif isinstance(p, TraceDeleted):
                deletes_in.append((env, p))
            elif isinstance(p, ScoreRecorded | ScoreUpdated | ScoreDeleted):
                scores_in.append((env, p))
            elif isinstance(p, ScoreConfigCreated | ScoreConfigUpdated | ScoreConfigArchived):
                configs_in.append((env, p))
            elif isinstance(p, QueueCreated | QueueUpdated | QueueItemAdded | QueueItemLeased | QueueItemCompleted
                            | QueueItemSkipped | QueueItemFlagged | QueueItemRemoved | QueueItemReleased
                            | QueueItemLeaseExpired | QueueItemSkipUndone):
                queues_in.append((env, p))
        gone = await self._tombstoned(session, deletes_in, traces_in, scores_in, queues_in)
        if gone:
            traces_in = [(env, p) for env, p in traces_in if (env.project, p.trace_id) not in gone]
            scores_in = [(env, p) for env, p in scores_in if (env.project, _trace_of(p)) not in gone]
        trace_rows: dict[tuple[str, str], dict[str, Any]] = {}
        changed_dims: dict[tuple[str, str], dict[str, Any]] = {}
        if traces_in:
            trace_rows, changed_dims = await self._traces(session, traces_in)
        if scores_in or changed_dims:
            await self._scores(session, scores_in, trace_rows, changed_dims)
        if configs_in:
            await self._configs(session, configs_in)
        if queues_in:
            await self._queues(session, queues_in, gone)
        if datasets_in:
            named = {(env.project, p.dataset.id): p.dataset.name for env, p in datasets_in}
            await session.execute(self.sql_datasets_up, rows_param(
                [{"project_id": k[0], "id": k[1], "name": n} for k, n in named.items()]))
        if deletes_in:
            await self._delete_traces(session, deletes_in)
        return [env for env, _ in todo]

    # -- deletion -----------------------------------------------------------------------------------------------

    async def _tombstoned(
        self, session: AsyncSession, deletes: list[tuple[Envelope, TraceDeleted]],
        traces_in: list[tuple[Envelope, TraceIngested]], scores_in: list[tuple[Envelope, Payload]],
        queues_in: list[tuple[Envelope, Payload]],
    ) -> set[tuple[str, str]]:
        """The traces of this batch that are deleted: by an event of this batch or by an earlier one."""
        gone = {(env.project, p.trace_id) for env, p in deletes}
        wanted = {(env.project, p.trace_id) for env, p in traces_in}
        wanted |= {(env.project, tid) for env, p in scores_in if (tid := _trace_of(p))}
        for env, p in queues_in:
            ref = getattr(p, "item", None)
            if ref is not None:
                wanted |= {(env.project, tid) for tid in (ref.trace_id, ref.object_id) if tid}
        wanted -= gone
        if wanted:
            # every batch asks: by arrays (two parameters, the primary-key index), not one pair per parameter
            gone |= set(await _by_keys(session, self.sql_tombstones_get, wanted))
        return gone

    async def _delete_traces(self, session: AsyncSession, events: list[tuple[Envelope, TraceDeleted]]) -> None:
        """Remove each trace with its observations, scores (and their rollup counts) and queue items, and keep
        its tombstone (the earliest deletion time, so a rebuild writes the same row)."""
        t = self.t
        first: dict[tuple[str, str], datetime] = {}
        for env, p in events:
            key = (env.project, p.trace_id)
            first[key] = min(first.get(key, env.occurred_at), env.occurred_at)
        tomb = upsert_sql(t.deleted_traces, ["project_id", "id", "deleted_at"], ["project_id", "id"],
                          "deleted_at = LEAST(t.deleted_at, EXCLUDED.deleted_at)")
        await session.execute(tomb, rows_param([
            {"project_id": k[0], "id": k[1], "deleted_at": v} for k, v in sorted(first.items())]))
        pairs = sorted(first)
        res = await session.execute(self.sql_scores_of_traces, {"project_id": sorted({k[0] for k in pairs}),
                                                                "trace_id": sorted({k[1] for k in pairs}),
                                                                "skip": []})
        deltas: dict[RollupKey, Measures] = {}
        for r in res.mappings():
            s = dict(r)
            if (s["project_id"], s["trace_id"]) in first:
                add_to(deltas, contributions(s["project_id"], s, s.get("rolled_dims") or {}), -1)
        await self._write_rollup(session, deltas)
        sc, o, tr, qi, qr = t.scores, t.observations, t.traces, t.queue_items, t.queue_reviews
        await session.execute(delete(sc).where(tuple_(sc.c.project_id, sc.c.trace_id).in_(pairs)))
        await session.execute(delete(o).where(tuple_(o.c.project_id, o.c.trace_id).in_(pairs)))
        await session.execute(delete(tr).where(tuple_(tr.c.project_id, tr.c.id).in_(pairs)))
        items = or_(tuple_(qi.c.project_id, qi.c.trace_id).in_(pairs),
                    tuple_(qi.c.project_id, qi.c.object_id).in_(pairs))
        keys = [tuple(r) for r in (await session.execute(
            select(qi.c.project_id, qi.c.queue_id, qi.c.item_id).where(items)))]
        if keys:
            await session.execute(delete(qr).where(tuple_(qr.c.project_id, qr.c.queue_id, qr.c.item_id).in_(keys)))
            await session.execute(delete(qi).where(tuple_(qi.c.project_id, qi.c.queue_id, qi.c.item_id).in_(keys)))

    # -- traces and observations ------------------------------------------------------------------------------

    async def _traces(
        self, session: AsyncSession, events: list[tuple[Envelope, TraceIngested]]
    ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
        t_upd: dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]] = defaultdict(list)
        o_upd: dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]] = defaultdict(list)
        for env, p in events:
            ts = to_micros(env.occurred_at)
            fields = p.trace.model_dump(exclude_unset=True, exclude={"id"}) if p.trace is not None else {}
            t_upd[(env.project, p.trace_id)].append((ts, env.occurred_at, fields))
            for o in p.observations:
                o_upd[(env.project, o.id)].append((ts, env.occurred_at, o.model_dump(exclude_unset=True,
                                                                                      exclude={"id"})))
        rows = await self._merge(session, self.sql_traces_get, t_upd, TRACE_FIELDS)
        for row, _, _ in rows.values():
            row["sort_ts"] = row.get("timestamp") or row["created_at"]
        changed_dims: dict[tuple[str, str], dict[str, Any]] = {}
        for key, (row, changed, is_new) in rows.items():
            if not is_new and DIM_FIELDS.intersection(changed):
                changed_dims[key] = row
        await session.execute(self.sql_traces_up, rows_param([r for r, _, _ in rows.values()]))
        if o_upd:
            orows = await self._merge(session, self.sql_obs_get, o_upd, OBS_FIELDS)
            await session.execute(self.sql_obs_up, rows_param([r for r, _, _ in orows.values()]))
        # A new trace may already have scores (they can arrive first): count them under its dimensions now.
        for key, (row, _, is_new) in rows.items():
            if is_new:
                changed_dims[key] = row
        return {k: v[0] for k, v in rows.items()}, changed_dims

    async def _merge(
        self, session: AsyncSession, select_stmt: Any,
        updates: dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]], fields: Sequence[str],
    ) -> dict[tuple[str, str], tuple[dict[str, Any], list[str], bool]]:
        existing = await _by_keys(session, select_stmt, updates)
        out: dict[tuple[str, str], tuple[dict[str, Any], list[str], bool]] = {}
        for key, ups in updates.items():
            row = existing.get(key)
            is_new = row is None
            if row is None:
                row = {"project_id": key[0], "id": key[1], **dict.fromkeys(fields), "field_ts": {},
                       "created_at": ups[0][1], "updated_at": ups[0][1]}
            field_ts = row["field_ts"]
            changed: list[str] = []
            for ts, when, upd in ups:
                changed.extend(merge_fields(row, field_ts, upd, ts))
                row["created_at"] = min(row["created_at"], when)
                row["updated_at"] = max(row["updated_at"], when)
            out[key] = (row, changed, is_new)
        return out

    # -- scores and their rollup --------------------------------------------------------------------------------

    async def _trace_dims(self, session: AsyncSession, keys: set[tuple[str, str]],
                          known: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        missing = [k for k in keys if k not in known]
        found = dict(known)
        if missing:
            found.update(await _by_keys(session, self.sql_trace_dims, missing))
        return found

    async def _scores(
        self, session: AsyncSession, events: list[tuple[Envelope, Payload]],
        trace_rows: dict[tuple[str, str], dict[str, Any]], changed_dims: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        deltas: dict[RollupKey, Measures] = {}
        by_key: dict[tuple[str, str], list[tuple[Envelope, Payload]]] = defaultdict(list)
        for env, p in events:
            sid = p.score_id if isinstance(p, ScoreDeleted) else p.score.id
            by_key[(env.project, sid)].append((env, p))
        written: dict[tuple[str, str], dict[str, Any]] = {}
        if by_key:
            existing = await _by_keys(session, self.sql_scores_get, by_key)
            states: dict[tuple[str, str], dict[str, Any]] = {}
            for key, evs in by_key.items():
                old = existing.get(key)
                state = dict(old) if old is not None else None
                for env, p in evs:
                    ts = to_micros(env.occurred_at)
                    if state is not None and state["event_ts"] > ts:
                        continue
                    if isinstance(p, ScoreDeleted):
                        if state is None:
                            state = {"project_id": key[0], "id": key[1], **dict.fromkeys(SCORE_FIELDS),
                                     "name": "", "data_type": "", "source": "", "timestamp": env.occurred_at,
                                     "trace_id": p.trace_id, "created_at": env.occurred_at}
                        state["deleted"] = True
                    else:
                        data = p.score.model_dump(exclude={"id"})
                        data["source"] = str(data["source"])
                        data["data_type"] = str(data["data_type"])
                        created = env.occurred_at if state is None else min(state["created_at"], env.occurred_at)
                        state = {**(state or {}), "project_id": key[0], "id": key[1], **data, "deleted": False,
                                 "created_at": created}
                    state["event_ts"] = ts
                    state["updated_at"] = env.occurred_at
                if state is not None and state is not old:
                    states[key] = state
                    if old is not None:
                        add_to(deltas, contributions(key[0], old, old.get("rolled_dims") or {}), -1)
            tkeys = {(k[0], s["trace_id"]) for k, s in states.items() if s.get("trace_id")}
            dims_src = await self._trace_dims(session, tkeys, trace_rows)
            for key, state in states.items():
                if state.get("deleted"):
                    # counted nowhere; no dimensions, so the row does not depend on when the trace arrived
                    state["rolled_dims"] = None
                    continue
                tr = dims_src.get((key[0], state["trace_id"])) if state.get("trace_id") else None
                state["rolled_dims"] = trace_dims(tr, state.get("environment"))
                add_to(deltas, contributions(key[0], state, state["rolled_dims"]), +1)
            if states:
                await session.execute(self.sql_scores_up, rows_param(list(states.values())))
            written = states
        if changed_dims:
            await self._reroll(session, changed_dims, written, deltas)
        await self._write_rollup(session, deltas)

    async def _reroll(self, session: AsyncSession, traces: dict[tuple[str, str], dict[str, Any]],
                      written: dict[tuple[str, str], dict[str, Any]], deltas: dict[RollupKey, Measures]) -> None:
        # skipping by id alone is exact only within one project (ids are per project)
        one_project = len({k[0] for k in written} | {k[0] for k in traces}) == 1
        skip = sorted({k[1] for k in written}) if one_project else []
        res = await session.execute(self.sql_scores_of_traces, {"project_id": sorted({k[0] for k in traces}),
                                                                "trace_id": sorted({k[1] for k in traces}),
                                                                "skip": skip})
        upd_p: list[str] = []
        upd_i: list[str] = []
        upd_d: list[str] = []
        for r in res.mappings():
            s = dict(r)
            trace = traces.get((s["project_id"], s["trace_id"]))
            if trace is None:  # matched the arrays, not the pair
                continue
            new_dims = trace_dims(trace, s.get("environment"))
            if s.get("rolled_dims") == new_dims:
                continue
            add_to(deltas, contributions(s["project_id"], s, s.get("rolled_dims") or {}), -1)
            add_to(deltas, contributions(s["project_id"], s, new_dims), +1)
            upd_p.append(s["project_id"])
            upd_i.append(s["id"])
            upd_d.append(jdump(new_dims) or "null")
        if upd_p:
            await session.execute(self.sql_set_dims, {"project_id": upd_p, "id": upd_i, "d": upd_d})

    async def _write_rollup(self, session: AsyncSession, deltas: dict[RollupKey, Measures]) -> None:
        rk = self.rollup_key_cols
        rows = [
            {**dict(zip(rk, k, strict=True)), "n": m[0], "n_value": m[1], "sum": m[2], "sum_sq": m[3]}
            for k, m in sorted(deltas.items(), key=lambda km: km[0]) if m[0] or m[1] or m[2] or m[3]
        ]
        if not rows:
            return
        res = await session.execute(self.sql_rollup_up, rows_param(rows))
        empty = [r for r in res.all() if r[0]]
        if empty:
            await session.execute(self.sql_rollup_del, {c: [r[i + 1] for r in empty] for i, c in enumerate(rk)})

    # -- configs and queues -------------------------------------------------------------------------------------

    async def _configs(self, session: AsyncSession, events: list[tuple[Envelope, Payload]]) -> None:
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for env, p in events:
            c = p.config
            row = {"project_id": env.project, "id": c.id, "version": c.version, "name": c.name,
                   "data_type": str(c.data_type), "data": c.model_dump(mode="json"),
                   "is_archived": bool(c.is_archived or isinstance(p, ScoreConfigArchived)),
                   "event_ts": to_micros(env.occurred_at)}
            cur = best.get((env.project, c.id))
            if cur is None or (row["version"], row["event_ts"]) >= (cur["version"], cur["event_ts"]):
                best[(env.project, c.id)] = row
        await session.execute(self.sql_cfg_up, rows_param(list(best.values())))

    async def _queues(self, session: AsyncSession, events: list[tuple[Envelope, Payload]],
                      gone: set[tuple[str, str]]) -> None:
        queues: dict[tuple[str, str], dict[str, Any]] = {}
        items: dict[tuple[str, str, str], dict[str, Any]] = {}
        reviews: dict[tuple[str, str, str, str], dict[str, Any]] = {}

        def least(row: dict[str, Any], col: str, when: datetime) -> bool:
            if row.get(col) is None or when < row[col]:
                row[col] = when
                return True
            return False

        def greatest(row: dict[str, Any], col: str, when: datetime) -> None:
            if row.get(col) is None or when > row[col]:
                row[col] = when

        for env, p in events:
            ts = to_micros(env.occurred_at)
            when = env.occurred_at
            if isinstance(p, QueueCreated | QueueUpdated):
                key = (env.project, p.queue.id)
                cur = queues.get(key)
                row = {"project_id": env.project, "id": p.queue.id, "name": p.queue.name,
                       "data": p.queue.model_dump(mode="json"), "created": isinstance(p, QueueCreated),
                       "event_ts": ts}
                if cur is None or ts >= cur["event_ts"]:
                    row["created"] = row["created"] or bool(cur and cur["created"])
                    queues[key] = row
                else:
                    cur["created"] = cur["created"] or row["created"]
                continue
            ref = p.item
            qkey = (env.project, ref.queue_id)
            if qkey not in queues:
                # an item event before its QueueCreated: the queue exists, its name is not known yet
                queues[qkey] = {"project_id": env.project, "id": ref.queue_id, "name": None, "data": None,
                                "created": False, "event_ts": -1}
            if _queue_event_of(env, p, gone):
                # the item went with its deleted trace (its queue stays, whatever the order events came in)
                continue
            ikey = (env.project, ref.queue_id, ref.item_id)
            item = items.get(ikey)
            if item is None:
                item = items[ikey] = {"project_id": env.project, "queue_id": ref.queue_id, "item_id": ref.item_id,
                                      "object_type": str(ref.object_type), "object_id": ref.object_id,
                                      "trace_id": ref.trace_id, "last_event_at": when}
            item["trace_id"] = item.get("trace_id") or ref.trace_id
            item["last_event_at"] = max(item["last_event_at"], when)
            if isinstance(p, QueueItemAdded):
                if least(item, "added_at", when):
                    item["reason"] = p.reason
                    item["rule_id"] = p.rule_id
                continue
            if isinstance(p, QueueItemRemoved):
                least(item, "removed_at", when)
                continue
            reviewer = p.reviewer
            rkey = (env.project, ref.queue_id, ref.item_id, reviewer)
            rev = reviews.setdefault(rkey, {"project_id": env.project, "queue_id": ref.queue_id,
                                            "item_id": ref.item_id, "reviewer": reviewer})
            if isinstance(p, QueueItemLeased):
                least(item, "first_leased_at", when)
                least(rev, "leased_at", when)
                greatest(rev, "last_leased_at", when)
            elif isinstance(p, QueueItemSkipUndone):
                greatest(rev, "skip_undone_at", when)
                continue
            else:
                greatest(rev, "last_ended_at", when)
            if isinstance(p, QueueItemCompleted):
                least(rev, "completed_at", when)
                if p.item_completed:
                    least(item, "completed_at", when)
            elif isinstance(p, QueueItemSkipped):
                greatest(rev, "last_skipped_at", when)
                if least(rev, "skipped_at", when):
                    rev["skip_reason"] = p.reason
            elif isinstance(p, QueueItemFlagged):
                least(item, "flagged_at", when)
                if least(rev, "flagged_at", when):
                    rev["flag_reason"] = p.reason
        if queues:
            rows = sorted(queues.values(), key=lambda r: (r["project_id"], r["id"]))
            await session.execute(self.sql_queue_up, rows_param(rows))
        if items:
            await session.execute(self.sql_items_up, rows_param(sorted(items.values(), key=lambda r: (
                r["project_id"], r["queue_id"], r["item_id"]))))
        if reviews:
            await session.execute(self.sql_reviews_up, rows_param(sorted(reviews.values(), key=lambda r: (
                r["project_id"], r["queue_id"], r["item_id"], r["reviewer"]))))
