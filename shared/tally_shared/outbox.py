"""Transactional outbox: an event goes out if and only if the change it describes committed.

1. ``add`` writes the events in the caller's transaction (one statement), beside the effect.
2. After commit, a caller that promises "on the broker" (an HTTP 2xx) calls ``Outbox.publish`` and waits for the
   acknowledgement; acknowledged rows are marked sent in bulk off the request path. Callers that need no such
   promise just ``wake`` the relay.
3. The relay (``Outbox.run``, a background task) publishes rows nobody published: at once when
   ``relay_after`` is 0, else only those older than it (their request crashed or its publish failed). It claims
   a batch with ``FOR UPDATE SKIP LOCKED`` (several replicas never publish a row at the same time), publishes it
   with one producer call, and marks it sent in the same transaction. It sleeps while there is nothing to do:
   woken by ``wake`` after a commit in this process, otherwise polling with a backoff up to ``idle_max``.

"Sent" is either the row deleted (``retention=None``: the table holds only what is still to publish) or
``sent_at`` set and the row pruned after ``retention`` (kept for inspection). A re-published event keeps its
envelope id, so consumers (idempotent by event id, see ``tally_shared.claims``) apply it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tally_shared.bulk import insert_rows
from tally_shared.envelope import Envelope
from tally_shared.producer import Producer, PublishFailed, Record
from tally_shared.topics import Topic

log = logging.getLogger(__name__)

OUTBOX_RELAYED = Counter("tally_outbox_relayed_total", "Events published by the outbox relay (not on the request "
                         "path)", ["table"])
OUTBOX_UNMARKED = Gauge("tally_outbox_acked_unmarked", "Events acknowledged but not yet marked sent", ["table"])


def outbox_table(metadata: MetaData, name: str = "outbox") -> Table:
    """The outbox of one service, in the metadata's schema. ``project_id``/``aggregate_id`` say what the event is
    about (``Outbox.publish_pending`` looks rows up by them); ``seq`` is the publishing order."""
    table = Table(
        name, metadata,
        Column("id", Uuid, primary_key=True),  # the envelope id
        Column("seq", BigInteger, Identity(), nullable=False),
        Column("project_id", String(64)),
        Column("aggregate_id", String(200)),
        Column("topic", String(100), nullable=False),
        Column("key", String(200), nullable=False),
        Column("event_type", String(64)),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
    )
    Index(f"ix_{name}_unsent", table.c.seq, postgresql_where=table.c.sent_at.is_(None))
    Index(f"ix_{name}_aggregate", table.c.project_id, table.c.aggregate_id)
    return table


@dataclass(frozen=True)
class Outgoing:
    """An event to publish on ``topic``; ``aggregate_id``: what it is about (for ``publish_pending``)."""

    topic: Topic
    envelope: Envelope
    aggregate_id: str | None = None

    @cached_property
    def body(self) -> bytes:
        return self.envelope.to_bytes()

    @property
    def record(self) -> Record:
        return Record.of(self.topic, self.envelope, self.body)


async def add(session: AsyncSession, table: Table, events: Sequence[Outgoing]) -> None:
    """Write the events' rows inside the caller's transaction (one statement for all of them)."""
    if not events:
        return
    await insert_rows(session, table, [
        {"id": e.envelope.id, "project_id": e.envelope.project, "aggregate_id": e.aggregate_id,
         "topic": e.topic.name, "key": e.envelope.key, "event_type": e.envelope.type, "body": e.body}
        for e in events
    ])


def _record(row: Any) -> Record:
    return Record.from_body(row.topic, row.key, row.body, row.event_type, str(row.id))


class Outbox:
    """One table's publisher and relay. Start the producer before ``run``; cancel ``run`` to stop."""

    def __init__(self, table: Table, sessions: async_sessionmaker[AsyncSession], producer: Producer, *,
                 relay_after: float = 0.0, batch: int = 500, retention: timedelta | None = None,
                 idle_min: float = 0.05, idle_max: float = 1.0, flush_every: float = 0.2) -> None:
        self.table = table
        self._sessions = sessions
        self.producer = producer
        self._relay_after = relay_after
        self._batch = batch
        self._retention = retention
        self._idle_min = idle_min
        self._idle_max = max(idle_max, idle_min)
        self._flush_every = flush_every
        self._acked: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._last_prune = 0.0

    # -- request path -----------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Rows were committed: relay them now rather than at the next poll."""
        self._wake.set()

    async def publish(self, events: Sequence[Outgoing]) -> None:
        """Publish committed events and wait for the broker's acknowledgement. Raises PublishFailed (the rows stay;
        the relay publishes them after ``relay_after``)."""
        events = [e for e in events if e.envelope.id not in self._acked]
        if not events:
            return
        try:
            await self.producer.send([e.record for e in events])
        except Exception as exc:
            log.warning("publish of %d events failed; the outbox relay will retry: %r", len(events), exc)
            raise
        self._acked.update(e.envelope.id for e in events)
        if len(self._acked) >= self._batch:
            self._wake.set()

    async def publish_pending(self, project_id: str, aggregate_ids: Iterable[str]) -> None:
        """Publish the rows still waiting for these aggregates, oldest first (a retried request whose first
        attempt stored the effect but did not get the acknowledgement)."""
        ids = list(dict.fromkeys(aggregate_ids))
        if not ids:
            return
        t = self.table
        async with self._sessions() as s:
            rows = (await s.execute(
                select(t.c.id, t.c.topic, t.c.key, t.c.event_type, t.c.body)
                .where(t.c.project_id == project_id, t.c.aggregate_id.in_(ids), t.c.sent_at.is_(None))
                .order_by(t.c.seq)
            )).all()
        pending = [r for r in rows if r.id not in self._acked]
        if pending:
            await self.producer.send([_record(r) for r in pending])
            self._acked.update(r.id for r in pending)

    # -- background -------------------------------------------------------------------------------------------
    async def _mark_sent(self, session: AsyncSession, ids: list[uuid.UUID]) -> None:
        t = self.table
        if self._retention is None:
            await session.execute(delete(t).where(t.c.id.in_(ids)))
        else:
            await session.execute(update(t).where(t.c.id.in_(ids)).values(sent_at=func.now()))

    async def flush_acked(self) -> int:
        """Mark the events acknowledged on the request path as sent (one statement)."""
        if not self._acked:
            return 0
        ids = list(self._acked)
        async with self._sessions() as s, s.begin():
            await self._mark_sent(s, ids)
        self._acked.difference_update(ids)
        OUTBOX_UNMARKED.labels(self.table.fullname).set(len(self._acked))
        return len(ids)

    async def relay_once(self) -> int:
        """Publish up to ``batch`` unpublished rows in order and mark them sent; returns how many."""
        t = self.table
        query = select(t.c.id, t.c.topic, t.c.key, t.c.event_type, t.c.body).where(t.c.sent_at.is_(None))
        if self._relay_after > 0:
            query = query.where(t.c.created_at < datetime.now(UTC) - timedelta(seconds=self._relay_after))
        async with self._sessions() as s, s.begin():
            rows = (await s.execute(
                query.order_by(t.c.seq).limit(self._batch).with_for_update(skip_locked=True)
            )).all()
            rows = [r for r in rows if r.id not in self._acked]
            if not rows:
                return 0
            await self.producer.send([_record(r) for r in rows])
            await self._mark_sent(s, [r.id for r in rows])
        OUTBOX_RELAYED.labels(t.fullname).inc(len(rows))
        if self._relay_after > 0:
            log.info("outbox relay published %d abandoned events", len(rows))
        return len(rows)

    async def prune(self) -> None:
        if self._retention is None:
            return
        t = self.table
        async with self._sessions() as s, s.begin():
            await s.execute(delete(t).where(t.c.sent_at < datetime.now(UTC) - self._retention))

    async def run(self) -> None:
        """Background task: relay, mark acknowledged rows sent, prune; sleep while idle. Cancel to stop (what was
        acknowledged is marked sent first)."""
        try:
            await self._loop()
        finally:
            with contextlib.suppress(Exception):
                await self.flush_acked()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        idle = self._idle_min
        while True:
            try:
                await self.flush_acked()
                sent = await self.relay_once()
                if self._retention is not None and loop.time() - self._last_prune > 600:
                    self._last_prune = loop.time()
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except PublishFailed as exc:
                # The broker is away (or the producer not connected yet): the rows wait, nothing to trace back.
                log.warning("outbox relay could not publish; retrying: %s", exc)
                sent = 0
                idle = self._idle_max
            except Exception:
                log.exception("outbox relay failed; retrying")
                sent = 0
                idle = self._idle_max
            if sent >= self._batch:
                continue  # more are waiting
            idle = self._idle_min if sent else min(idle * 2, self._idle_max)
            # Acknowledged rows are marked sent at least every flush_every while any are waiting.
            wait = min(idle, self._flush_every) if self._acked else idle
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races a set event,
            # and this task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            if self._wake.is_set():
                self._wake.clear()
                idle = self._idle_min


__all__ = ["Outbox", "Outgoing", "add", "outbox_table"]
