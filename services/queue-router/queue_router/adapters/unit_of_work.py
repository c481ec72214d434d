"""The unit of work: one transaction, the stores that read and write in it, its event claims and its outbox.

Nothing is kept unless ``commit()`` is called: leaving the block without it (a read, or an exception) rolls back.
Events added with ``publish`` are written to the outbox by ``commit`` in the same transaction, in one statement,
so they go out if and only if the change they describe committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction, async_sessionmaker

from queue_router.adapters.review_store import ReviewStore
from queue_router.adapters.stores import DecisionStore, ItemStore, QueueStore, RuleStore, SummaryStore
from queue_router.adapters.tables import outbox, processed_events
from tally_shared import claims
from tally_shared.envelope import Envelope
from tally_shared.outbox import Outbox, Outgoing, add
from tally_shared.topics import QUEUES


async def write_events(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
    """queue-router's events (all on tally.queues) into its outbox, in the caller's transaction."""
    await add(session, outbox, [Outgoing(QUEUES, e) for e in envelopes])


class UnitOfWork:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], relay: Outbox | None = None) -> None:
        self._sessions = sessions
        self._relay = relay
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
        self.reviews = ReviewStore(s)
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
        return await claims.claim(self.session, processed_events, consumer, ids)

    def publish(self, *events: Envelope) -> None:
        self._events.extend(events)

    async def commit(self) -> None:
        assert self._tx is not None, "commit outside the unit of work"
        published = bool(self._events)
        if published:
            await write_events(self.session, self._events)
            self._events = []
        await self._tx.commit()
        if published and self._relay is not None:
            self._relay.wake()  # relayed now rather than at the relay's next poll


UnitOfWorkFactory = Callable[[], UnitOfWork]


def unit_of_work(sessions: async_sessionmaker[AsyncSession], relay: Outbox | None = None) -> UnitOfWorkFactory:
    return lambda: UnitOfWork(sessions, relay)
