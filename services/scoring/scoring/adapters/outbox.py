"""Transactional outbox: the score (or config) row and the fact that its event must be published never diverge.

1. The effect and its outbox rows are written in one transaction.
2. Right after commit the events are published and the request waits for the broker's acknowledgement, so a 2xx
   means "stored and on Kafka".
3. Acknowledged rows are deleted in bulk shortly after (off the request path).
4. A relay re-publishes rows older than ``relay_after`` seconds: those whose request crashed or whose publish failed.
   A re-published event keeps its envelope id, so consumers (idempotent by event id) apply it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scoring.adapters.metrics import OUTBOX_PENDING, OUTBOX_RELAYED
from scoring.adapters.tables import outbox
from tally_shared.envelope import Envelope
from tally_shared.metrics import EVENTS_PUBLISHED, PUBLISH_SECONDS
from tally_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)
_TOPICS = {t.name: t for t in ALL_TOPICS}


class PublishFailed(Exception):
    """Stored, but the broker did not acknowledge the event (the relay will publish it later)."""


@dataclass(frozen=True)
class Outgoing:
    topic: Topic
    envelope: Envelope
    aggregate_id: str

    @cached_property
    def body(self) -> bytes:
        return self.envelope.to_bytes()


async def add(session: AsyncSession, events: Sequence[Outgoing]) -> None:
    """Write the events' outbox rows inside the caller's transaction."""
    if not events:
        return
    await session.execute(outbox.insert(), [
        {"id": e.envelope.id, "project_id": e.envelope.project, "aggregate_id": e.aggregate_id,
         "topic": e.topic.name, "key": e.envelope.key, "body": e.body}
        for e in events
    ])


class OutboxPublisher:
    """Publishes with its own aiokafka producer: FastStream's per-message publish path costs several times more
    CPU and, with the shared broker's linger, milliseconds of latency per score (measured in bench/scoring.py)."""

    def __init__(self, bootstrap_servers: str, sessions: async_sessionmaker[AsyncSession], *,
                 relay_after: float = 5.0, relay_interval: float = 1.0, publish_timeout: float = 10.0) -> None:
        self._bootstrap = bootstrap_servers
        self._producer: AIOKafkaProducer | None = None
        self._sessions = sessions
        self._relay_after = relay_after
        self._relay_interval = relay_interval
        self._publish_timeout = publish_timeout
        self._acked: set[uuid.UUID] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        # aiokafka binds to the running event loop, so the producer is made here, not in __init__.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id="tally-scoring-outbox",
            # acks=all: the HTTP 2xx promises the event is on the broker.
            acks="all",
            # Tansu has no idempotent producer; consumers dedupe by envelope id instead.
            enable_idempotence=False,
            # No linger: a reviewer's single score should not wait; batches form anyway while a send is in flight.
            linger_ms=0,
            max_request_size=16 * 1024 * 1024,
        )
        await self._producer.start()

    async def publish(self, events: Sequence[Outgoing]) -> None:
        """Publish committed events and wait for the broker's acknowledgement. Raises PublishFailed."""
        events = [e for e in events if e.envelope.id not in self._acked]
        if not events:
            return
        if self._producer is None:
            raise PublishFailed("the event producer is not started")
        producer = self._producer
        start = time.perf_counter()
        try:
            futures = [
                await producer.send(
                    e.topic.name, value=e.body, key=e.envelope.key.encode(),
                    headers=[("event-type", e.envelope.type.encode()), ("content-type", b"application/json")],
                )
                for e in events
            ]
            async with asyncio.timeout(self._publish_timeout):
                await asyncio.gather(*futures)
        except Exception as exc:
            log.warning("publish of %d events failed; the outbox relay will retry: %r", len(events), exc)
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        elapsed = time.perf_counter() - start
        for e in events:
            EVENTS_PUBLISHED.labels(e.topic.name, e.envelope.type).inc()
        for name in {e.topic.name for e in events}:
            PUBLISH_SECONDS.labels(name).observe(elapsed)
        self._acked.update(e.envelope.id for e in events)
        if len(self._acked) >= 500:
            self._wake.set()

    async def publish_pending(self, project_id: str, aggregate_ids: Iterable[str]) -> None:
        """Publish any outbox rows still waiting for these aggregates (a retried request whose first attempt
        stored the effect but did not get the acknowledgement)."""
        ids = list(dict.fromkeys(aggregate_ids))
        if not ids:
            return
        async with self._sessions() as s:
            rows = (await s.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.body, outbox.c.aggregate_id)
                .where(outbox.c.project_id == project_id, outbox.c.aggregate_id.in_(ids))
                .order_by(outbox.c.created_at)
            )).all()
        pending = [r for r in rows if r.id not in self._acked]
        if pending:
            await self.publish([
                Outgoing(_TOPICS[r.topic], Envelope.model_validate_json(r.body), r.aggregate_id) for r in pending
            ])

    async def flush_acked(self) -> int:
        if not self._acked:
            return 0
        ids = list(self._acked)
        async with self._sessions() as s, s.begin():
            await s.execute(delete(outbox).where(outbox.c.id.in_(ids)))
        self._acked.difference_update(ids)
        OUTBOX_PENDING.set(len(self._acked))
        return len(ids)

    async def relay_once(self) -> int:
        """Publish abandoned rows (oldest first), then delete them, holding row locks so that several processes
        never relay the same row at once."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._relay_after)
        async with self._sessions() as s, s.begin():
            rows = (await s.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.body, outbox.c.aggregate_id)
                .where(outbox.c.created_at < cutoff)
                .order_by(outbox.c.created_at)
                .limit(500)
                .with_for_update(skip_locked=True)
            )).all()
            rows = [r for r in rows if r.id not in self._acked]
            if not rows:
                return 0
            await self.publish([
                Outgoing(_TOPICS[r.topic], Envelope.model_validate_json(r.body), r.aggregate_id) for r in rows
            ])
            await s.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
        self._acked.difference_update(r.id for r in rows)
        OUTBOX_RELAYED.inc(len(rows))
        log.info("outbox relay published %d abandoned events", len(rows))
        return len(rows)

    async def run(self) -> None:
        """Background task: delete acknowledged rows every 200 ms, relay abandoned ones every interval."""
        last_relay = 0.0
        loop = asyncio.get_running_loop()
        try:
            await self._maintain(loop, last_relay)
        finally:
            await self.drain()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()

    async def _maintain(self, loop: asyncio.AbstractEventLoop, last_relay: float) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races a set event,
            # and this task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush_acked()
                if loop.time() - last_relay >= self._relay_interval:
                    last_relay = loop.time()
                    await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox maintenance failed; retrying")
                await asyncio.sleep(1)

    async def drain(self) -> None:
        """On shutdown: forget nothing that was acknowledged."""
        with contextlib.suppress(Exception):
            await self.flush_acked()
