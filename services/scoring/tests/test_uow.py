"""The unit of work: nothing is kept without an explicit commit; a commit keeps the claim and the outbox rows."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from scoring.adapters.tables import outbox, processed_events
from scoring.application.deps import Deps
from tally_shared.envelope import make_envelope
from tally_shared.events import ScoreDeleted
from tally_shared.outbox import Outgoing
from tally_shared.topics import SCORES

from .conftest import Service


async def test_uncommitted_work_is_rolled_back_and_committed_work_kept(service: Service) -> None:
    deps: Deps = service.app.state.container.deps
    consumer, event_id = f"uow-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    event = Outgoing(SCORES, make_envelope(ScoreDeleted(score_id="s1"), project="p-uow", key="k"), "s1")

    async with deps.uow() as uow:
        assert await uow.claim(consumer, event_id) is True
        uow.emit(event)
        # left without commit: an early return or an exception

    async def stored() -> tuple[bool, str | None]:
        async with deps.sessions() as s:
            claimed = (await s.execute(select(processed_events.c.event_id).where(
                processed_events.c.consumer == consumer))).first() is not None
            row = (await s.execute(select(outbox.c.event_type).where(outbox.c.id == event.envelope.id))).first()
            return claimed, row.event_type if row else None

    assert await stored() == (False, None)

    async with deps.uow() as uow:
        assert await uow.claim(consumer, event_id) is True
        uow.emit(event)
        await uow.commit()
    assert uow.committed == [event]
    assert await stored() == (True, "ScoreDeleted")
    async with deps.uow() as uow:
        assert await uow.claim(consumer, event_id) is False
