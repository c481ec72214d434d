"""The unit of work: one transaction, the stores that read and write in it, its event claims and its outbox.

Nothing is kept unless ``commit()`` is called: leaving the block without it (a read, or an exception) rolls back.
Events added with ``publish`` are written to the outbox by ``commit`` in the same transaction, in one statement,
so they go out if and only if the change they describe committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction, async_sessionmaker

from queue_router.adapters.outbox import enqueue
from queue_router.adapters.stores import DecisionStore, ItemStore, QueueStore, RuleStore, SummaryStore
from tally_shared.envelope import Envelope

_CLAIM = text(
    "INSERT INTO queue_router.processed_events (consumer, event_id) "
    "SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING RETURNING event_id")


class UnitOfWork:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._tx: AsyncSessionTransaction | None = None
        self._events: list[Envelope] = []

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessions()
        self._tx = await self.session.begin()
        s = self.session
        self.queues = QueueStore(s)
        self.rules = RuleStore(s)
        self.items = ItemStore(s)
        self.summaries = SummaryStore(s)
        self.decisions = DecisionStore(s)
        self._events = []
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._tx is not None and self._tx.is_active:
                await self._tx.rollback()
        finally:
            await self.session.close()

    async def claim(self, consumer: str, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Record the event ids as processed by ``consumer``; returns those not processed before (exactly-once:
        a redelivered event is claimed by no one)."""
        rows = await self.session.execute(_CLAIM, {"consumer": consumer, "ids": list(dict.fromkeys(ids))})
        return {r[0] for r in rows}

    def publish(self, *events: Envelope) -> None:
        self._events.extend(events)

    async def commit(self) -> None:
        assert self._tx is not None, "commit outside the unit of work"
        if self._events:
            await enqueue(self.session, self._events)
            self._events = []
        await self._tx.commit()


UnitOfWorkFactory = Callable[[], UnitOfWork]


def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> UnitOfWorkFactory:
    return lambda: UnitOfWork(sessions)
