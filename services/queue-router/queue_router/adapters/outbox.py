"""Transactional outbox: ``enqueue`` writes events in the caller's transaction; ``relay`` publishes them.

Why: an event must go out if and only if the state change it describes committed. Writing it to a table in the
same transaction makes that atomic; the relay then publishes at least once (a crash between publish and marking
sent republishes; consumers dedupe by event id). Several relays may run (one per process): each claims a batch
with ``FOR UPDATE SKIP LOCKED``, so a row is published by one relay at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from faststream.kafka import KafkaBroker
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from queue_router.adapters.bulk import insert_rows
from queue_router.adapters.tables import outbox
from tally_shared.envelope import Envelope
from tally_shared.messaging import publish
from tally_shared.topics import QUEUES, Topic

log = logging.getLogger(__name__)


async def enqueue(session: AsyncSession, envelopes: Sequence[Envelope], topic: Topic = QUEUES) -> None:
    if not envelopes:
        return
    await insert_rows(
        session, outbox,
        [{"event_id": e.id, "topic": topic.name, "key": e.key, "event_type": e.type, "body": e.to_bytes()}
         for e in envelopes],
    )


_TOPICS = {QUEUES.name: QUEUES}


async def relay_once(sessions: async_sessionmaker[AsyncSession], broker: KafkaBroker, batch: int = 500) -> int:
    """Publish up to ``batch`` unsent events in id order; returns how many were sent."""
    async with sessions() as session, session.begin():
        rows = (await session.execute(
            select(outbox.c.id, outbox.c.topic, outbox.c.body)
            .where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id).limit(batch)
            .with_for_update(skip_locked=True)
        )).all()
        if not rows:
            return 0
        by_topic: dict[str, list[Envelope]] = {}
        for r in rows:
            by_topic.setdefault(r.topic, []).append(Envelope.model_validate_json(r.body))
        for name, envs in by_topic.items():
            await publish(broker, _TOPICS.get(name) or Topic(name, 1, ""), envs)
        await session.execute(
            update(outbox).where(outbox.c.id.in_([r.id for r in rows])).values(sent_at=datetime.now(UTC))
        )
        return len(rows)


async def prune(sessions: async_sessionmaker[AsyncSession], older_than: timedelta) -> None:
    async with sessions() as session, session.begin():
        await session.execute(delete(outbox).where(outbox.c.sent_at < datetime.now(UTC) - older_than))


async def relay_forever(
    sessions: async_sessionmaker[AsyncSession], broker: KafkaBroker, *, poll_seconds: float, batch: int,
    retention: timedelta,
) -> None:
    last_prune = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            sent = await relay_once(sessions, broker, batch)
            if loop.time() - last_prune > 600:
                await prune(sessions, retention)
                last_prune = loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox relay failed; retrying")
            sent = 0
            await asyncio.sleep(1.0)
        if sent < batch:
            await asyncio.sleep(poll_seconds)
