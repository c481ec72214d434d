"""Scores (whole-row last-write-wins, tombstones for deletions) and their pre-aggregated rollup.

The rollup is what many traces share, so it is written per shard: each delta goes to the row of the partition its
event came from. A partition has one owner at a time, so replicas never write the same rollup row, and reads sum
over the shards (they group by everything but the shard already).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from projections.adapters.statements import SCORE_FIELDS
from projections.application.projections.base import Projection, by_keys
from projections.application.unit_of_work import TraceKey, UnitOfWork
from projections.domain.merge import to_micros
from projections.domain.rollup import (
    Measures,
    RollupKey,
    accumulate,
    accumulate_moved,
    dim_pairs,
    row_ids,
    trace_dims,
)
from tally_shared.envelope import Payload
from tally_shared.events import ScoreDeleted, ScoreRecorded, ScoreUpdated
from tally_shared.events.scores import ScoreData
from tally_shared.records import Event, defaults

# shard (partition) -> rollup key -> measures
Deltas = dict[int, dict[RollupKey, Measures]]

_SCORE_DEFAULTS = {k: v for k, v in defaults(ScoreData).items() if k != "id"}


def _score_id(e: Event) -> str:
    return str(e.payload["score"]["id"])


def _deleted_id(e: Event) -> str:
    return str(e.payload["score_id"])


def _written(key: tuple[str, str], state: dict[str, Any] | None, e: Event) -> dict[str, Any]:
    created = e.occurred_at if state is None else min(state["created_at"], e.occurred_at)
    # ``state`` is this batch's own copy of the row: updated in place (what the payload leaves unset: defaults)
    row = state if state is not None else {}
    row.update(_SCORE_DEFAULTS)
    row.update(e.payload["score"])
    row["project_id"], row["id"] = key
    row["source"] = str(row["source"])
    row["data_type"] = str(row["data_type"])
    row["deleted"] = False
    row["created_at"] = created
    return row


def _deleted(key: tuple[str, str], state: dict[str, Any] | None, e: Event) -> dict[str, Any]:
    if state is None:
        state = {"project_id": key[0], "id": key[1], **dict.fromkeys(SCORE_FIELDS), "name": "", "data_type": "",
                 "source": "", "timestamp": e.occurred_at, "trace_id": e.payload.get("trace_id"),
                 "created_at": e.occurred_at}
    state["deleted"] = True
    return state


_ID_OF = {ScoreRecorded: _score_id, ScoreUpdated: _score_id, ScoreDeleted: _deleted_id}
_NEXT_STATE = {ScoreRecorded: _written, ScoreUpdated: _written, ScoreDeleted: _deleted}


def rolled_dims(raw: str | None) -> Any:
    """A score's ``rolled_dims`` from the JSON text ``sql_scores_of_traces`` selects."""
    return None if raw is None else orjson.loads(raw)


def traces_of(e: Event) -> Iterable[str | None]:
    p = e.payload
    return (p["score"].get("trace_id"),) if "score" in p else (p.get("trace_id"),)


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    sql, state = uow.sql, uow.state
    deltas: Deltas = defaultdict(dict)
    by_key: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        tid = next(iter(traces_of(e)))
        if tid and (e.project, tid) in state.gone:
            continue
        by_key[(e.project, _ID_OF[e.cls](e))].append(e)
    written: dict[tuple[str, str], dict[str, Any]] = {}
    if by_key:
        existing = await by_keys(uow, sql.sql_scores_get, by_key)
        shard_of: dict[tuple[str, str], int] = {}
        replaced: list[tuple[tuple[str, str], dict[str, Any]]] = []
        for key, evs in by_key.items():
            old = existing.get(key)
            cur = dict(old) if old is not None else None
            for e in evs:
                ts = to_micros(e.occurred_at)
                if cur is not None and cur["event_ts"] > ts:
                    continue
                cur = _NEXT_STATE[e.cls](key, cur, e)
                cur["event_ts"] = ts
                cur["updated_at"] = e.occurred_at
                shard_of[key] = e.partition
            if cur is not None and cur is not old:
                written[key] = cur
                if old is not None:
                    replaced.append((key, old))
        tkeys = {(k[0], s["trace_id"]) for k, s in written.items() if s.get("trace_id")}
        missing = [k for k in tkeys if k not in state.trace_rows]
        dims_src = dict(state.trace_rows)
        if missing:
            dims_src.update(await by_keys(uow, sql.sql_trace_dims, missing))
        # one trace's scores share their dimensions (and the day rows they count under)
        dims_of: dict[tuple[str, str | None, str | None], tuple[dict[str, Any], list[tuple[str, str]]]] = {}
        counted: list[tuple[tuple[str, str], dict[str, Any], list[tuple[str, str]]]] = []
        for key, row in written.items():
            if row.get("deleted"):
                # counted nowhere; no dimensions, so the row does not depend on when the trace arrived
                row["rolled_dims"] = None
                continue
            tid = row.get("trace_id")
            env = row.get("environment")
            dkey = (key[0], tid, env)
            got = dims_of.get(dkey)
            if got is None:
                dims = trace_dims(dims_src.get((key[0], tid)) if tid else None, env)
                got = dims_of[dkey] = (dims, dim_pairs(dims))
            row["rolled_dims"] = got[0]
            counted.append((key, row, got[1]))

        def count() -> None:
            # the old rows out, then the new ones in (the order the deltas have always been summed in)
            for key, old in replaced:
                accumulate(deltas[shard_of[key]], key[0], old, dim_pairs(old.get("rolled_dims") or {}), -1)
            for key, row, pairs in counted:
                accumulate(deltas[shard_of[key]], key[0], row, pairs, +1)

        if written:
            # PostgreSQL writes the score rows while this process counts their rollup deltas
            await uow.overlapped(uow.execute(sql.scores_up.stmt, sql.scores_up.params(list(written.values()))),
                                 count)
        else:
            count()
    if state.changed_dims:
        await _reroll(uow, state.changed_dims, written, deltas)
    await write_rollup(uow, deltas)


async def _reroll(uow: UnitOfWork, traces: dict[TraceKey, dict[str, Any]],
                  written: dict[tuple[str, str], dict[str, Any]], deltas: Deltas) -> None:
    """Scores counted under a trace's old dimensions move to its new ones."""
    shard = uow.state.trace_shard
    # skipping by id alone is exact only within one project (ids are per project)
    one_project = len({k[0] for k in written} | {k[0] for k in traces}) == 1
    skip = sorted({k[1] for k in written}) if one_project else []
    res = await uow.execute(uow.sql.sql_scores_of_traces, {"project_id": sorted({k[0] for k in traces}),
                                                           "trace_id": sorted({k[1] for k in traces}),
                                                           "skip": skip})
    upd_p: list[str] = []
    upd_i: list[str] = []
    upd_d: list[str] = []
    # a trace's scores share their old dimensions (same JSON text) and their new ones: parsed and paired once
    olds: dict[str | None, tuple[Any, list[tuple[str, str]]]] = {}
    news: dict[tuple[str, str, Any], tuple[dict[str, Any], list[tuple[str, str]], str]] = {}
    for s in res.mappings():
        tkey = (s["project_id"], s["trace_id"])
        trace = traces.get(tkey)
        if trace is None or (tkey[0], s["id"]) in written:  # matched the arrays, not the pair
            continue
        env = s["environment"]
        nkey = (tkey[0], tkey[1], env)
        new = news.get(nkey)
        if new is None:
            nd = trace_dims(trace, env)
            new = news[nkey] = (nd, dim_pairs(nd), orjson.dumps(nd).decode())
        raw = s["rolled_dims_json"]
        old = olds.get(raw)
        if old is None:
            od = rolled_dims(raw)
            old = olds[raw] = (od, dim_pairs(od or {}))
        if old[0] == new[0]:
            continue
        accumulate_moved(deltas[shard.get(tkey, 0)], tkey[0], s, old[1], new[1])
        upd_p.append(tkey[0])
        upd_i.append(s["id"])
        upd_d.append(new[2])
    if upd_p:
        await uow.execute(uow.sql.sql_set_dims, {"project_id": upd_p, "id": upd_i, "d": upd_d})


async def write_rollup(uow: UnitOfWork, deltas: Deltas) -> None:
    rk = uow.sql.rollup_key_cols
    # rows in the statement's column order: the ids, the rollup key's columns, the shard, the measures.
    # Not sorted: a shard's rows have one writer (two only while its partition changes hands, when a deadlock is
    # a transient error and the batch is retried).
    # (the sums as the text of their Decimals, what the JSON encoder's fallback would make of them, one call fewer)
    rows = [(*row_ids(k), *k, shard, m[0], m[1], str(m[2]), str(m[3])) for shard, d in deltas.items()
            for k, m in d.items() if m[0] or m[1] or m[2] or m[3]]
    if not rows:
        return
    res = await uow.execute(uow.sql.sql_rollup_up, uow.sql.rollup_up.values(rows))
    empty = [r for r in res.all() if r[0]]
    if empty:
        await uow.execute(uow.sql.sql_rollup_del, {c: [r[i + 1] for r in empty] for i, c in enumerate(rk)})


HANDLES: tuple[type[Payload], ...] = tuple(_ID_OF)
PROJECTION = Projection("scores", HANDLES, apply, traces_of, always=True)
