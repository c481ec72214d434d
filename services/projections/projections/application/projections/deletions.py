"""Trace deletion: the trace goes with its observations, scores (and their rollup counts) and queue items, and
its tombstone stays (the earliest deletion time, so a rebuild writes the same row). Events about a tombstoned
trace are dropped by every projection (``tombstoned`` runs before them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, tuple_

from projections.application.projections.base import Projection, by_keys, trace_keys
from projections.application.projections.scores import Deltas, rolled_dims, write_rollup
from projections.application.unit_of_work import TraceKey, UnitOfWork
from projections.domain.rollup import accumulate, dim_pairs
from tally_shared.bulk import rows_param
from tally_shared.envelope import Payload
from tally_shared.events import TraceDeleted
from tally_shared.records import Event


def traces_of(e: Event) -> Iterable[str | None]:
    return (e.payload["trace_id"],)


async def tombstoned(uow: UnitOfWork, deletes: Sequence[Event], others: Iterable[tuple[Projection, list[Event]]]
                     ) -> set[TraceKey]:
    """The traces of this batch that are deleted: by an event of this batch or by an earlier one."""
    gone = trace_keys(deletes, traces_of)
    wanted: set[TraceKey] = set()
    for projection, events in others:
        wanted |= trace_keys(events, projection.traces_of)
    wanted -= gone
    if wanted:
        gone |= set(await by_keys(uow, uow.sql.sql_tombstones_get, wanted))
    return gone


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    sql, t = uow.sql, uow.sql.t
    first: dict[TraceKey, datetime] = {}
    shard: dict[TraceKey, int] = {}
    for e in events:
        key = (e.project, e.payload["trace_id"])
        if key not in first or e.occurred_at < first[key]:
            first[key] = e.occurred_at
        shard[key] = e.partition
    await uow.execute(sql.sql_tombstone_up, rows_param([
        {"project_id": k[0], "id": k[1], "deleted_at": v} for k, v in sorted(first.items())]))
    pairs = sorted(first)
    res = await uow.execute(sql.sql_scores_of_traces, {"project_id": sorted({k[0] for k in pairs}),
                                                       "trace_id": sorted({k[1] for k in pairs}), "skip": []})
    deltas: Deltas = defaultdict(dict)
    for r in res.mappings():
        s = dict(r)
        key = (s["project_id"], s["trace_id"])
        if key in first:
            accumulate(deltas[shard[key]], s["project_id"], s, dim_pairs(rolled_dims(s["rolled_dims_json"]) or {}), -1)
    await write_rollup(uow, deltas)
    sc, o, tr, qi, qr = t.scores, t.observations, t.traces, t.queue_items, t.queue_reviews
    await uow.execute(delete(sc).where(tuple_(sc.c.project_id, sc.c.trace_id).in_(pairs)))
    await uow.execute(delete(o).where(tuple_(o.c.project_id, o.c.trace_id).in_(pairs)))
    await uow.execute(delete(tr).where(tuple_(tr.c.project_id, tr.c.id).in_(pairs)))
    items = or_(tuple_(qi.c.project_id, qi.c.trace_id).in_(pairs), tuple_(qi.c.project_id, qi.c.object_id).in_(pairs))
    keys = [tuple(r) for r in (await uow.execute(select(qi.c.project_id, qi.c.queue_id, qi.c.item_id).where(items)))]
    if keys:
        await uow.execute(delete(qr).where(tuple_(qr.c.project_id, qr.c.queue_id, qr.c.item_id).in_(keys)))
        await uow.execute(delete(qi).where(tuple_(qi.c.project_id, qi.c.queue_id, qi.c.item_id).in_(keys)))


HANDLES: tuple[type[Payload], ...] = (TraceDeleted,)
PROJECTION = Projection("traces", HANDLES, apply, traces_of)
