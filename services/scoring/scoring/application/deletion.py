"""Trace deletion: a ``TraceDeleted`` deletes every score of the trace (``ScoreDeleted`` each, through the
outbox, with a history entry) and keeps a tombstone so that scores sent for the trace later are refused."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from scoring import CONSUMER
from scoring.adapters import repository
from scoring.adapters.tables import deleted_traces, scores
from scoring.application.deps import Deps
from scoring.domain.scores import event_key
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events import ScoreDeleted, TraceDeleted
from tally_shared.outbox import Outgoing
from tally_shared.topics import SCORES

DELETED_BY = "trace-deletion"


async def handle_trace_deleted(env: Envelope, event: TraceDeleted, deps: Deps, consumer: str = CONSUMER) -> int:
    """Returns how many scores were deleted (0 for a redelivery)."""
    project, now = env.project, deps.clock()
    async with deps.uow() as uow:
        if not await uow.claim(consumer, env.id):
            return 0
        s = uow.session
        await s.execute(pg_insert(deleted_traces).values(project_id=project, trace_id=event.trace_id,
                                                         deleted_at=env.occurred_at).on_conflict_do_nothing())
        ids = list((await s.execute(select(scores.c.id).where(
            scores.c.project_id == project, scores.c.trace_id == event.trace_id, scores.c.deleted_at.is_(None))
            .order_by(scores.c.id))).scalars())
        stored = await repository.get_scores(s, project, ids, lock=True)
        history = []
        for sid in ids:
            st = stored[sid]
            rev = st.revision + 1
            await repository.mark_deleted(s, project, sid, rev, now, DELETED_BY)
            history.append((st.score, rev, "deleted", DELETED_BY))
            uow.emit(Outgoing(SCORES, make_envelope(
                ScoreDeleted(score_id=sid, trace_id=event.trace_id, deleted_by=DELETED_BY),
                project=project, key=event_key(st.score)), sid))
        await repository.add_history(s, project, history, now)
        await uow.commit()
    if ids:
        await uow.publish_pending(project, ids)
    return len(ids)


async def deleted_among(s: AsyncSession, project_id: str, trace_ids: Iterable[str | None]) -> set[str]:
    wanted = sorted({t for t in trace_ids if t})
    if not wanted:
        return set()
    rows = await s.execute(select(deleted_traces.c.trace_id).where(
        deleted_traces.c.project_id == project_id, deleted_traces.c.trace_id.in_(wanted)))
    return set(rows.scalars())
