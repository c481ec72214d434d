"""Trace deletion: a ``TraceDeleted`` removes the trace's pending queue items (``QueueItemRemoved`` each), drops
what routing kept about it, and leaves a tombstone so later events about the trace are not routed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from queue_router.adapters.items_store import event_key, item_ref
from queue_router.adapters.unit_of_work import UnitOfWork
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events.queues import QueueItemRemoved
from tally_shared.events.traces import TraceDeleted

REMOVED_BY = "trace-deletion"


async def delete_traces(uow: UnitOfWork, events: Sequence[tuple[Envelope, TraceDeleted]]) -> int:
    """Apply the deletions; returns how many queue items were removed."""
    if not events:
        return 0
    pairs = sorted({(env.project, p.trace_id) for env, p in events})
    now = datetime.now(UTC)
    await uow.summaries.forget(pairs, now)
    removed = await uow.items.remove_pending_of_traces(pairs, REMOVED_BY, now)
    for r in removed:
        ref = item_ref(r)
        uow.publish(make_envelope(QueueItemRemoved(item=ref, removed_by=REMOVED_BY), project=r["project_id"],
                                  key=event_key(ref), occurred_at=now))
    return len(removed)
