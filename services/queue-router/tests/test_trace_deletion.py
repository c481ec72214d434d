"""TraceDeleted: the trace's pending items are removed (QueueItemRemoved through the outbox) and later events
about the trace route nowhere."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from queue_router.adapters.tables import outbox
from queue_router.application.routing import RouterDeps, route_batch
from queue_router.testing import Service
from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events import ScoreData, ScoreRecorded, TraceData, TraceDeleted, TraceIngested

from .test_routing import make_queue, make_rule, one


async def test_deleted_trace_leaves_its_queues_and_is_not_routed_again(svc: Service) -> None:
    project, auth = await svc.project()
    qid = await make_queue(svc, auth)
    await make_rule(svc, auth, qid, "del", one({"field": "name", "op": "eq", "value": "del"}))
    other_q = await make_queue(svc, auth)
    await make_rule(svc, auth, other_q, "scored", one({"field": "score", "name": "judge", "op": "exists"}))
    deps = RouterDeps(svc.app.state.container.uow, svc.app.state.container.rules, consumer="deletion-test")
    tid, kept = f"d-{uuid.uuid4().hex[:6]}", f"k-{uuid.uuid4().hex[:6]}"

    def env(payload: Payload, trace_id: str) -> tuple[Envelope, Payload]:
        e = make_envelope(payload, project=project, key=trace_id)
        return e, e.parse_payload()

    added = await route_batch([env(TraceIngested(trace_id=t, trace=TraceData(id=t, name="del")), t)
                               for t in (tid, kept)], deps)
    assert len(added.added) == 2
    result = await route_batch([env(TraceDeleted(trace_id=tid), tid)], deps)
    assert result.removed == 1
    assert [i["object_id"] for i in await svc.items(auth, qid)] == [kept]
    [removed] = await svc.items(auth, qid, status="REMOVED")
    assert removed["object_id"] == tid

    # a late update and an automated score for the deleted trace: no new item in any queue
    late = await route_batch([
        env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="del")), tid),
        env(ScoreRecorded(score=ScoreData(id=str(uuid.uuid4()), name="judge", data_type="NUMERIC", value=1,
                                          trace_id=tid, source="EVAL", timestamp=datetime.now(UTC))), tid),
    ], deps)
    assert late.added == [] and late.evaluated == 0
    assert await svc.items(auth, other_q) == []
    # deleting again changes nothing
    assert (await route_batch([env(TraceDeleted(trace_id=tid), tid)], deps)).removed == 0

    async with svc.app.state.container.sessions() as s:
        rows = (await s.execute(select(outbox.c.event_type, outbox.c.key).where(
            outbox.c.event_type == "QueueItemRemoved", outbox.c.key == tid))).all()
    assert [tuple(r) for r in rows] == [("QueueItemRemoved", tid)]
