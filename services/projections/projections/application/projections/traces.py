"""Traces and observations: per-field last-write-wins merges of partial updates (``domain.merge``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from projections.adapters.statements import OBS_FIELDS, TRACE_FIELDS, Positional
from projections.application.projections.base import Projection, by_keys
from projections.application.unit_of_work import TraceKey, UnitOfWork
from projections.domain.merge import merge_fields, to_micros
from tally_shared.envelope import Payload
from tally_shared.events import DatasetRunItemCreated, TraceIngested
from tally_shared.records import Event

DIM_FIELDS = frozenset({"name", "environment", "release", "user_id", "tags"})

Updates = dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]]


def _ingested(e: Event, traces: Updates, obs: Updates) -> str:
    p = e.payload
    ts = to_micros(e.occurred_at)
    trace = p.get("trace")
    fields = {k: v for k, v in trace.items() if k != "id"} if trace is not None else {}
    traces[(e.project, p["trace_id"])].append((ts, e.occurred_at, fields))
    for o in p.get("observations") or ():
        obs[(e.project, o["id"])].append((ts, e.occurred_at, {k: v for k, v in o.items() if k != "id"}))
    return p["trace_id"]


def _run_item(e: Event, traces: Updates, _obs: Updates) -> str:
    """A run item recorded through the datasets API is the same experiment link as ingest's
    ``dataset-run-item-create``: a partial update of its trace, merged per field like any other."""
    ri = e.payload["run_item"]
    traces[(e.project, ri["trace_id"])].append((to_micros(e.occurred_at), e.occurred_at, {
        "dataset_run_name": ri["run_name"], "dataset_item_id": ri["dataset_item_id"],
        "dataset_id": ri["dataset_id"], "dataset_name": ri["dataset_name"]}))
    return str(ri["trace_id"])


_UPDATES_OF = {TraceIngested: _ingested, DatasetRunItemCreated: _run_item}


def _trace_id(e: Event) -> str:
    p = e.payload
    return str(p["trace_id"] if "trace_id" in p else p["run_item"]["trace_id"])


def traces_of(e: Event) -> Iterable[str | None]:
    return (_trace_id(e),)


Merged = dict[tuple[str, str], tuple[dict[str, Any], list[str], bool]]


def _merge_into(row: dict[str, Any], ups: list[tuple[int, datetime, dict[str, Any]]]) -> list[str]:
    field_ts = row["field_ts"]
    changed: list[str] = []
    for ts, when, upd in ups:
        changed.extend(merge_fields(row, field_ts, upd, ts))
        if when < row["created_at"]:
            row["created_at"] = when
        if when > row["updated_at"]:
            row["updated_at"] = when
    return changed


def _new_row(key: tuple[str, str], ups: list[tuple[int, datetime, dict[str, Any]]], blank: dict[str, Any]
             ) -> tuple[dict[str, Any], list[str]]:
    when = ups[0][1]
    row = {"project_id": key[0], "id": key[1], **blank, "field_ts": {}, "created_at": when, "updated_at": when}
    return row, _merge_into(row, ups)


async def upsert(uow: UnitOfWork, insert: Positional, update: Positional, select_stmt: Any, updates: Updates,
                 fields: Sequence[str], finish: Callable[[dict[str, Any]], None] | None = None) -> Merged:
    """Write the merged rows of ``updates``; returns key -> (row as written, fields changed, whether new).

    Most keys are new: every row is first inserted as if it were (``ON CONFLICT DO NOTHING``), and only the keys
    that were already there are read back, merged field by field into the stored row and written over it.
    ``finish`` completes a row (derived columns) before it is written."""
    blank = dict.fromkeys(fields)
    out: Merged = {}
    for key, ups in updates.items():
        row, changed = _new_row(key, ups, blank)
        if finish is not None:
            finish(row)
        out[key] = (row, changed, True)
    res = await uow.execute(insert.stmt, insert.params(r for r, _, _ in out.values()))
    inserted = {(r[0], r[1]) for r in res}
    if len(inserted) == len(out):
        return out
    existing = await by_keys(uow, select_stmt, (k for k in out if k not in inserted))
    merged = []
    for key, row in existing.items():
        changed = _merge_into(row, updates[key])
        if finish is not None:
            finish(row)
        out[key] = (row, changed, False)
        merged.append(row)
    # a key neither inserted nor found (deleted meanwhile) is written as new
    merged.extend(out[k][0] for k in out if k not in inserted and k not in existing)
    await uow.execute(update.stmt, update.params(merged))
    return out


def _sort_ts(row: dict[str, Any]) -> None:
    row["sort_ts"] = row.get("timestamp") or row["created_at"]


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    sql, state = uow.sql, uow.state
    t_upd: Updates = defaultdict(list)
    o_upd: Updates = defaultdict(list)
    for e in events:
        tid = _UPDATES_OF[e.cls](e, t_upd, o_upd) if (e.project, _trace_id(e)) not in state.gone else None
        if tid is not None:
            state.trace_shard[(e.project, tid)] = e.partition
    if not t_upd:
        return
    rows = await upsert(uow, sql.traces_new, sql.traces_up, sql.sql_traces_get, t_upd, TRACE_FIELDS, _sort_ts)
    changed_dims: dict[TraceKey, dict[str, Any]] = {}
    for key, (row, changed, is_new) in rows.items():
        # a new trace may already have scores (they can arrive first): count them under its dimensions now
        if is_new or DIM_FIELDS.intersection(changed):
            changed_dims[key] = row
    if o_upd:
        await upsert(uow, sql.obs_new, sql.obs_up, sql.sql_obs_get, o_upd, OBS_FIELDS)
    state.trace_rows.update({k: v[0] for k, v in rows.items()})
    state.changed_dims.update(changed_dims)


HANDLES: tuple[type[Payload], ...] = tuple(_UPDATES_OF)
PROJECTION = Projection("traces", HANDLES, apply, traces_of)
