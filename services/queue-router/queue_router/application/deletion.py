"""Trace deletion: a ``TraceDeleted`` removes the trace's pending queue items (``QueueItemRemoved`` each), drops
what routing kept about it, and leaves a tombstone so later events about the trace are not routed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from queue_router.adapters.items_store import event_key, item_ref
from queue_router.adapters.outbox import enqueue
from queue_router.adapters.tables import deleted_traces, item_slots, items, reviews, trace_scores, trace_summaries
from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events.queues import QueueItemRemoved
from tally_shared.events.scores import ScoreDeleted
from tally_shared.events.traces import TraceDeleted

REMOVED_BY = "trace-deletion"


def trace_of(p: Payload) -> str | None:
    if isinstance(p, TraceDeleted | ScoreDeleted):
        return p.trace_id
    trace_id = getattr(p, "trace_id", None)
    if isinstance(trace_id, str):
        return trace_id
    score = getattr(p, "score", None)
    return score.trace_id if score is not None else None


async def delete_traces(session: AsyncSession, events: Sequence[tuple[Envelope, TraceDeleted]]) -> int:
    """Apply the deletions; returns how many queue items were removed."""
    if not events:
        return 0
    pairs = sorted({(env.project, p.trace_id) for env, p in events})
    now = datetime.now(UTC)
    await session.execute(pg_insert(deleted_traces).values(
        [{"project_id": pid, "trace_id": tid, "deleted_at": now} for pid, tid in pairs]).on_conflict_do_nothing())
    await session.execute(delete(trace_summaries).where(
        tuple_(trace_summaries.c.project_id, trace_summaries.c.trace_id).in_(pairs)))
    await session.execute(delete(trace_scores).where(
        tuple_(trace_scores.c.project_id, trace_scores.c.trace_id).in_(pairs)))
    pending = (await session.execute(
        select(items).where(
            items.c.status == "PENDING",
            or_(tuple_(items.c.project_id, items.c.trace_id).in_(pairs),
                and_(items.c.object_type == "TRACE", tuple_(items.c.project_id, items.c.object_id).in_(pairs))))
        .order_by(items.c.id).with_for_update())).mappings().all()
    if not pending:
        return 0
    ids = [r["id"] for r in pending]
    await session.execute(update(items).where(items.c.id.in_(ids)).values(
        status="REMOVED", removed_at=now, removed_by=REMOVED_BY, updated_at=now))
    await session.execute(delete(item_slots).where(item_slots.c.item_id.in_(ids)))
    await session.execute(update(reviews).where(reviews.c.item_id.in_(ids), reviews.c.status == "in_progress")
                          .values(status="released", updated_at=now))
    envelopes = []
    for r in pending:
        ref = item_ref(r)
        envelopes.append(make_envelope(QueueItemRemoved(item=ref, removed_by=REMOVED_BY), project=r["project_id"],
                                       key=event_key(ref), occurred_at=now))
    await enqueue(session, envelopes)
    return len(pending)


async def tombstoned(session: AsyncSession, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    rows = await session.execute(select(deleted_traces.c.project_id, deleted_traces.c.trace_id).where(
        tuple_(deleted_traces.c.project_id, deleted_traces.c.trace_id).in_(sorted(keys))))
    return {(r[0], r[1]) for r in rows}
