"""The shared outbox and producer against the real database and broker: rows written in the caller's transaction,
published once in order with the event headers, marked sent (deleted, or kept with ``sent_at``), rows published on
the request path not relayed again, and the relay waking at once after a commit."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import MetaData, select, text

from tally_shared import logs
from tally_shared.db import make_engine, make_session_factory
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events import ScoreDeleted
from tally_shared.outbox import Outbox, Outgoing, add, outbox_table
from tally_shared.producer import Producer, PublishFailed
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORES

md = MetaData(schema="outbox_test")
table = outbox_table(md)


@pytest_asyncio.fixture
async def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=5)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA IF NOT EXISTS outbox_test"))
        await conn.run_sync(md.create_all)
        await conn.execute(table.delete())
    yield make_session_factory(engine)
    await engine.dispose()


@pytest_asyncio.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[Producer]:
    p = Producer(kafka_bootstrap, client_id="outbox-test")
    await p.start()
    yield p
    await p.stop()


class Tap:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.seen: list[tuple[Envelope, dict[str, bytes]]] = []

    async def pump(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    self.seen.append((Envelope.model_validate_json(r.value), dict(r.headers)))

    def of(self, key: str) -> list[tuple[Envelope, dict[str, bytes]]]:
        return [(e, h) for e, h in self.seen if e.key == key]


@pytest_asyncio.fixture
async def tap(kafka_bootstrap: str) -> AsyncIterator[Tap]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(SCORES.name, p) for p in range(SCORES.partitions)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    t = Tap(consumer)
    task = asyncio.create_task(t.pump())
    yield t
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


def _events(key: str, n: int) -> list[Outgoing]:
    return [Outgoing(SCORES, make_envelope(ScoreDeleted(score_id=f"s{i}"), project="p1", key=key), f"s{i}")
            for i in range(n)]


async def _rows(sessions) -> list:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return list((await s.execute(select(table.c.id, table.c.sent_at, table.c.event_type))).all())


async def test_relay_publishes_in_order_with_headers_and_deletes(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    events = _events(key, 5)
    async with sessions() as s, s.begin():
        await add(s, table, events)
    rows = await _rows(sessions)
    assert {r.id for r in rows} == {e.envelope.id for e in events} and {r.event_type for r in rows} == {"ScoreDeleted"}
    outbox = Outbox(table, sessions, producer, batch=3)
    assert await outbox.relay_once() == 3
    assert await outbox.relay_once() == 2
    assert await outbox.relay_once() == 0
    assert await _rows(sessions) == []

    async def all_seen() -> bool:
        return len(tap.of(key)) == 5

    await eventually(all_seen, timeout=10, what="5 relayed events")
    seen = tap.of(key)
    assert [e.id for e, _ in seen] == [e.envelope.id for e in events]  # the order they were written in
    env, headers = seen[0]
    assert headers["event-type"] == b"ScoreDeleted" and headers["event-id"] == str(env.id).encode()


async def test_retention_keeps_sent_rows_then_prunes(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    async with sessions() as s, s.begin():
        await add(s, table, _events(key, 2))
    outbox = Outbox(table, sessions, producer, retention=timedelta(hours=1))
    assert await outbox.relay_once() == 2
    rows = await _rows(sessions)
    assert len(rows) == 2 and all(r.sent_at is not None for r in rows)
    assert await outbox.relay_once() == 0  # sent rows are not sent again
    await outbox.prune()
    assert len(await _rows(sessions)) == 2
    async with sessions() as s, s.begin():
        await s.execute(table.update().values(sent_at=table.c.sent_at - timedelta(hours=2)))
    await outbox.prune()
    assert await _rows(sessions) == []


async def test_published_rows_are_not_relayed_and_get_marked(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    events = _events(key, 2)
    async with sessions() as s, s.begin():
        await add(s, table, events)
    outbox = Outbox(table, sessions, producer)
    await outbox.publish(events)
    assert await outbox.relay_once() == 0  # acknowledged already: waiting to be marked, not re-published
    await outbox.publish(events)  # a second call for the same events sends nothing
    assert await outbox.flush_acked() == 2
    assert await _rows(sessions) == []
    await asyncio.sleep(0.5)
    assert len(tap.of(key)) == 2


async def test_relay_after_leaves_fresh_rows_to_their_request(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    async with sessions() as s, s.begin():
        await add(s, table, _events(key, 1))
    outbox = Outbox(table, sessions, producer, relay_after=30)
    assert await outbox.relay_once() == 0
    async with sessions() as s, s.begin():
        await s.execute(table.update().values(created_at=table.c.created_at - timedelta(seconds=60)))
    assert await outbox.relay_once() == 1


async def test_publish_pending_sends_what_an_aggregate_still_waits_for(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    events = _events(key, 3)
    async with sessions() as s, s.begin():
        await add(s, table, events)
    outbox = Outbox(table, sessions, producer)
    await outbox.publish_pending("p1", ["s1", "s2"])
    await outbox.publish_pending("other-project", ["s0"])
    assert await outbox.flush_acked() == 2

    async def two() -> bool:
        return len(tap.of(key)) == 2

    await eventually(two, timeout=10, what="pending events")
    assert {e.payload["score_id"] for e, _ in tap.of(key)} == {"s1", "s2"}
    assert [r.id for r in await _rows(sessions)] == [events[0].envelope.id]


async def test_run_wakes_at_once_after_a_commit_and_stops_when_cancelled(sessions, producer, tap) -> None:  # type: ignore[no-untyped-def]
    # idle_max long: only the wake-up can explain a prompt publish.
    outbox = Outbox(table, sessions, producer, idle_min=5.0, idle_max=5.0)
    task = asyncio.create_task(outbox.run())
    await asyncio.sleep(0.3)
    key = uuid.uuid4().hex
    async with sessions() as s, s.begin():
        await add(s, table, _events(key, 1))
    started = time.monotonic()
    outbox.wake()

    async def published() -> bool:
        return len(tap.of(key)) == 1

    await eventually(published, timeout=4, interval=0.02, what="woken relay")
    assert time.monotonic() - started < 4
    for _ in range(3):  # cancelled in the same tick as a wake-up: must still stop
        outbox.wake()
        task.cancel()
        await asyncio.sleep(0)
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done


async def test_unstarted_or_refusing_producer_raises_publish_failed(sessions) -> None:  # type: ignore[no-untyped-def]
    producer = Producer("127.0.0.1:1", client_id="never")
    with pytest.raises(PublishFailed):
        await producer.publish(SCORES, [e.envelope for e in _events("k", 1)])


async def test_trace_id_of_the_log_context_travels_as_a_header(producer, tap) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4().hex
    with logs.log_context(trace_id="0af7651916cd43dd8448eb211c80319c"):
        await producer.publish(SCORES, [e.envelope for e in _events(key, 1)])

    async def seen() -> bool:
        return len(tap.of(key)) == 1

    await eventually(seen, timeout=10, what="event")
    assert tap.of(key)[0][1]["trace-id"] == b"0af7651916cd43dd8448eb211c80319c"
