"""Unit of work: one transaction of scoring's, with the consumer's event claim and the outbox in it.

Nothing is kept unless ``commit`` is called: leaving the block without it (an exception, an early return)
rolls everything back. Events emitted in the transaction are written to the outbox at commit; ``publish`` then
waits for the broker's acknowledgement (a 2xx means "stored and on Kafka")."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scoring.adapters.tables import outbox as outbox_table
from scoring.adapters.tables import processed_events
from tally_shared import claims
from tally_shared.outbox import Outbox, Outgoing, add


class UnitOfWork:
    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._emitted: list[Outgoing] = []
        self.committed: list[Outgoing] = []

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessions()
        await self.session.begin()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self.session.in_transaction():
                await self.session.rollback()
        finally:
            await self.session.close()

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Record the event as applied by ``consumer``; False if it was before (then apply nothing)."""
        return await claims.claim_one(self.session, processed_events, consumer, event_id)

    async def release(self, consumer: str, event_id: uuid.UUID) -> None:
        await claims.release(self.session, processed_events, consumer, [event_id])

    def emit(self, *events: Outgoing) -> None:
        """Events that describe this transaction's changes: written to the outbox with them."""
        self._emitted.extend(events)

    async def commit(self) -> None:
        await add(self.session, outbox_table, self._emitted)
        await self.session.commit()
        self.committed, self._emitted = self._emitted, []

    async def publish(self) -> None:
        """After commit: publish the committed events and wait for the acknowledgement (raises PublishFailed)."""
        await self._outbox.publish(self.committed)

    async def publish_pending(self, project_id: str, aggregate_ids: Iterable[str]) -> None:
        """After commit: publish whatever still waits in the outbox for these aggregates (this transaction's
        events included), oldest first."""
        await self._outbox.publish_pending(project_id, aggregate_ids)
