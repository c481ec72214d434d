"""Traces and observations: per-field last-write-wins merges of partial updates (``domain.merge``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from projections.adapters.statements import OBS_FIELDS, TRACE_FIELDS, Positional, Statements
from projections.application.projections.base import Projection, by_keys
from projections.application.unit_of_work import TraceKey, UnitOfWork
from projections.domain.merge import field_bits, merge_fields, pack_field_ts, to_micros, unpack_field_ts
from tally_shared.envelope import Payload
from tally_shared.events import DatasetRunItemCreated, TraceIngested
from tally_shared.records import Event

DIM_FIELDS = frozenset({"name", "environment", "release", "user_id", "tags"})

Updates = dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]]


def _ingested(e: Event, traces: Updates, obs: Updates) -> str:
    p = e.payload
    ts = to_micros(e.occurred_at)
    trace = p.get("trace")
    fields = dict(trace) if trace is not None else {}
    fields.pop("id", None)
    traces[(e.project, p["trace_id"])].append((ts, e.occurred_at, fields))
    for o in p.get("observations") or ():
        upd = dict(o)
        del upd["id"]
        obs[(e.project, o["id"])].append((ts, e.occurred_at, upd))
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


# key -> (row as written, fields its updates changed in the stored row, whether new): a new row changes every field
# it sets, and nothing asks which, so they are not listed
Merged = dict[tuple[str, str], tuple[dict[str, Any], Sequence[str], bool]]
Ups = list[tuple[int, datetime, dict[str, Any]]]


def _merge_into(row: dict[str, Any], ups: Ups) -> list[str]:
    field_ts = row["field_ts"]
    changed: list[str] = []
    for ts, when, upd in ups:
        changed.extend(merge_fields(row, field_ts, upd, ts))
        if when < row["created_at"]:
            row["created_at"] = when
        if when > row["updated_at"]:
            row["updated_at"] = when
    return changed


class _Writer:
    """The rows of one table: built as new, written, and merged into the stored rows where there were some.
    Rows go out with their ``field_ts`` packed (``domain.merge.pack_field_ts``)."""

    def __init__(self, insert: Positional, update: Positional, select_stmt: Any, fields: Sequence[str],
                 finish: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.insert, self.update, self.select_stmt, self.finish = insert, update, select_stmt, finish
        self.fields = tuple(fields)
        self.bits = field_bits(fields)
        self.blank = dict.fromkeys(fields)
        self.template = {"project_id": None, "id": None, **self.blank, "field_ts": None, "created_at": None,
                         "updated_at": None}
        self._masks: dict[tuple[str, ...], int] = {}
        self.stored_share = 0.0

    def new_row(self, key: tuple[str, str], ups: Ups) -> dict[str, Any]:
        """The row as if ``key`` were new (``field_ts`` packed)."""
        ts, when, upd = ups[0]
        row: dict[str, Any]
        if len(ups) > 1:
            row = {"project_id": key[0], "id": key[1], **self.blank, "field_ts": {}, "created_at": when,
                   "updated_at": when}
            _merge_into(row, ups)
            row["field_ts"] = pack_field_ts(row["field_ts"], self.bits)
            return row
        # one update on a blank row (the common case): it sets every field it carries, and changes the non-null
        names = tuple(upd)
        mask = self._masks.get(names)
        if mask is None:
            mask = self._masks[names] = sum(self.bits[n] for n in names)
        # a copy of the blank row (one C-level copy of its table), then the update's fields over it: the same keys
        # in the same order as building the row from scratch, about a third cheaper
        row = self.template.copy()
        row["project_id"] = key[0]
        row["id"] = key[1]
        row.update(upd)
        row["field_ts"] = [ts, mask] if names else []
        row["created_at"] = row["updated_at"] = when
        return row

    def _merge_stored(self, row: dict[str, Any], ups: Ups) -> list[str]:
        field_ts = row["field_ts"] = unpack_field_ts(row["field_ts"], self.fields)
        changed = _merge_into(row, ups)
        row["field_ts"] = pack_field_ts(field_ts, self.bits)
        if self.finish is not None:
            self.finish(row)
        return changed

    async def write(self, uow: UnitOfWork, updates: Updates) -> Merged:
        """Write the merged rows of ``updates`` (``Merged``).

        Most keys are new: every row is first inserted as if it were (``ON CONFLICT DO NOTHING``), and only the
        keys that were already there are read back, merged field by field into the stored row and written over
        it. While most keys of recent batches were stored already (updates of what came before), the rows are
        read first instead, as that sends each row once."""
        if self.stored_share > 0.5:
            return await self._read_first(uow, updates)
        out: Merged = {}
        finish, new_row = self.finish, self.new_row
        for key, ups in updates.items():
            row = new_row(key, ups)
            if finish is not None:
                finish(row)
            out[key] = (row, (), True)
        # every row has every column (blank fields are None)
        res = await uow.execute(self.insert.stmt, self.insert.of_rows([r for r, _, _ in out.values()]))
        inserted = {(r[0], r[1]) for r in res}
        self._observe(len(out) - len(inserted), len(out))
        if len(inserted) == len(out):
            return out
        existing = await by_keys(uow, self.select_stmt, (k for k in out if k not in inserted))
        # a key neither inserted nor found (deleted meanwhile) is written as new
        again = [v[0] for k, v in out.items() if k not in inserted and k not in existing]
        for key, row in existing.items():
            out[key] = (row, self._merge_stored(row, updates[key]), False)
            again.append(row)
        await uow.execute(self.update.stmt, self.update.of_rows(again))
        return out

    async def _read_first(self, uow: UnitOfWork, updates: Updates) -> Merged:
        existing = await by_keys(uow, self.select_stmt, updates)
        self._observe(len(existing), len(updates))
        out: Merged = {}
        for key, ups in updates.items():
            row = existing.get(key)
            if row is None:
                row = self.new_row(key, ups)
                if self.finish is not None:
                    self.finish(row)
                out[key] = (row, (), True)
            else:
                out[key] = (row, self._merge_stored(row, ups), False)
        await uow.execute(self.update.stmt, self.update.of_rows([r for r, _, _ in out.values()]))
        return out

    def _observe(self, stored: int, total: int) -> None:
        """A moving share of keys that were stored already: which way the next batch goes (either is exact)."""
        self.stored_share = 0.7 * self.stored_share + 0.3 * (stored / total)


def _sort_ts(row: dict[str, Any]) -> None:
    row["sort_ts"] = row.get("timestamp") or row["created_at"]


@dataclass(frozen=True)
class _Writers:
    traces: _Writer
    observations: _Writer


_WRITERS: WeakKeyDictionary[Statements, _Writers] = WeakKeyDictionary()


def _writers(sql: Statements) -> _Writers:
    """One pair per ``Statements`` (the live schema's, a rebuild's shadow schema's)."""
    w = _WRITERS.get(sql)
    if w is None:
        w = _WRITERS[sql] = _Writers(
            _Writer(sql.traces_new, sql.traces_up, sql.sql_traces_get, TRACE_FIELDS, _sort_ts),
            _Writer(sql.obs_new, sql.obs_up, sql.sql_obs_get, OBS_FIELDS))
    return w


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
    rows = await _writers(sql).traces.write(uow, t_upd)
    changed_dims: dict[TraceKey, dict[str, Any]] = {}
    for key, (row, changed, is_new) in rows.items():
        # a new trace may already have scores (they can arrive first): count them under its dimensions now
        if is_new or DIM_FIELDS.intersection(changed):
            changed_dims[key] = row
    if o_upd:
        await _writers(sql).observations.write(uow, o_upd)
    state.trace_rows.update({k: v[0] for k, v in rows.items()})
    state.changed_dims.update(changed_dims)


HANDLES: tuple[type[Payload], ...] = tuple(_UPDATES_OF)
PROJECTION = Projection("traces", HANDLES, apply, traces_of)
