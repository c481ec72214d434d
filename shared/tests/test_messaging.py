"""Subscribers against the real broker: events reach the handler, poison reaches the dead-letter topic."""

import asyncio
import base64
import uuid

import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events import TraceData, TraceIngested
from tally_shared.messaging import ensure_topics, make_broker, publish, subscribe
from tally_shared.metrics import DEAD_LETTERS
from tally_shared.topics import DEAD_LETTER, Topic


async def test_events_reach_handler_and_poison_is_dead_lettered(kafka_bootstrap: str) -> None:
    group = f"test-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    seen: list[Envelope] = []
    done = asyncio.Event()

    async def handler(env: Envelope, payload: Payload) -> None:
        if env.project == marker:
            seen.append(env)
            done.set()

    topic = await _own_topic(kafka_bootstrap)
    broker = make_broker(kafka_bootstrap, service="test", registry=CollectorRegistry())
    subscribe(broker, topic, group_id=group, handler=handler)
    dlq = AIOKafkaConsumer(DEAD_LETTER.name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="latest",
                           group_id=f"{group}-dlq")
    before = _dead_letter_count(group, topic.name)
    await broker.start()
    await dlq.start()
    try:
        await asyncio.sleep(0.5)
        poison = f"not json {marker}".encode()
        await broker.publish(poison, topic=topic.name, key=b"k")
        env = make_envelope(TraceIngested(trace_id="t1", trace=TraceData(id="t1", name="n")), project=marker, key="t1")
        await publish(broker, topic, [env])
        await asyncio.wait_for(done.wait(), 20)
        assert [e.id for e in seen] == [env.id]

        async def find_dead_letter() -> dict:  # type: ignore[type-arg]
            while True:
                batch = await dlq.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        rec = orjson.loads(r.value)
                        # other consumers of the topic in this session (a projections app) dead-letter it too
                        if rec["consumer"] == group and marker in base64.b64decode(rec["original_b64"]).decode(
                                errors="replace"):
                            return rec  # type: ignore[no-any-return]

        rec = await asyncio.wait_for(find_dead_letter(), 20)
        assert rec["consumer"] == group and rec["topic"] == topic.name and "not JSON" in rec["reason"]
        assert _dead_letter_count(group, topic.name) == before + 1
        assert rec["reason_code"] == "decode" and rec["key"] == "k" and rec["project"] is None
        assert DEAD_LETTERS.labels(group, topic.name, "decode")._value.get() >= 1
    finally:
        await dlq.stop()
        await broker.stop()


async def test_batch_with_an_unappliable_event_dead_letters_it_and_applies_the_rest(
    kafka_bootstrap: str, database_url: str
) -> None:
    """A value the database rejects forever (too long for its column) must not block the partition: the batch is
    split until that event stands alone, it goes to the dead-letter topic, every other event is applied."""
    from sqlalchemy import text

    from tally_shared.db import make_engine
    from tally_shared.messaging import subscribe_batch

    engine = make_engine(database_url, pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS bisect_probe"))
        await conn.execute(text("CREATE TABLE bisect_probe (trace_id varchar(20) PRIMARY KEY)"))
    marker = uuid.uuid4().hex
    group = f"test-{uuid.uuid4().hex[:8]}"

    async def handler(batch: list[tuple[Envelope, Payload]]) -> None:
        mine = [env.key for env, _ in batch if env.project == marker]
        if not mine:
            return
        async with engine.begin() as conn:
            for key in mine:
                await conn.execute(text("INSERT INTO bisect_probe VALUES (:k) ON CONFLICT DO NOTHING"), {"k": key})

    topic = await _own_topic(kafka_bootstrap)
    broker = make_broker(kafka_bootstrap, service="test", registry=CollectorRegistry())
    subscribe_batch(broker, [topic], group_id=group, handler=handler)
    before = _dead_letter_count(group, topic.name)
    keys = [f"ok-{i}" for i in range(5)] + ["x" * 50] + [f"ok-{i}" for i in range(5, 10)]
    await broker.start()
    try:
        envs = [make_envelope(TraceIngested(trace_id=k), project=marker, key=k) for k in keys]
        await publish(broker, topic, envs)

        async def applied() -> int | None:
            async with engine.connect() as conn:
                n = int((await conn.execute(text("SELECT count(*) FROM bisect_probe"))).scalar_one())
            return n if n == 10 else None

        from tally_shared.testing.wait import eventually

        assert await eventually(applied, timeout=30, what="the ten good events applied") == 10
        await eventually(lambda: _dlq_count(group, topic.name, before), timeout=10, what="the bad event dead-lettered")
        records = await _dead_letters_of(kafka_bootstrap, group)
        mine = [r for r in records if "x" * 50 in base64.b64decode(r["original_b64"]).decode(errors="replace")]
        assert len(mine) == 1 and "value too long" in mine[0]["reason"], records
        # what the original says about itself, for the project's dead-letter list; the SQLSTATE class as the code
        assert mine[0]["reason_code"] == "database:22" and mine[0]["project"] == marker
        assert mine[0]["key"] == "x" * 50 and mine[0]["event_type"] == "TraceIngested"
        assert mine[0]["event_id"] == str(envs[5].id)
    finally:
        await broker.stop()
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE bisect_probe"))
        await engine.dispose()


async def test_batch_prefilter_sees_only_the_topics_it_is_given(kafka_bootstrap: str) -> None:
    """One batch subscriber over two topics, its prefilter limited to one: the other topic's records are all
    handed over unfiltered (scoring: every score command, a few trace events)."""
    from tally_shared.messaging import subscribe_batch

    marker = uuid.uuid4().hex
    group = f"test-{uuid.uuid4().hex[:8]}"
    filtered, kept = await _own_topic(kafka_bootstrap), await _own_topic(kafka_bootstrap)
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(batch: list[tuple[Envelope, Payload]]) -> None:
        seen.extend(env.key for env, _ in batch if env.project == marker)
        if {"last", "wanted"} <= set(seen):
            done.set()

    def prefilter(body: bytes) -> bool:
        return b"wanted" in body

    registry = CollectorRegistry()
    broker = make_broker(kafka_bootstrap, service="test", registry=registry)
    subscribe_batch(broker, [filtered, kept], group_id=group, handler=handler, prefilter=prefilter,
                    prefilter_topics={filtered.name})
    await broker.start()
    try:
        await publish(broker, filtered, [make_envelope(TraceIngested(trace_id=k), project=marker, key=k)
                                         for k in ("skipped", "wanted")])
        await publish(broker, kept, [make_envelope(TraceIngested(trace_id=k), project=marker, key=k)
                                     for k in ("command", "last")])
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0.5)
        assert sorted(seen) == ["command", "last", "wanted"]
        # FastStream's consume metrics still count the batches' records and bytes
        sizes = [m for m in registry.collect() if m.name.endswith("received_messages_size_bytes")]
        total = sum(x.value for m in sizes for x in m.samples if x.name.endswith("_sum"))
        counts = [m for m in registry.collect() if m.name.endswith("received_messages")]
        assert total > 0 and sum(x.value for m in counts for x in m.samples if x.name.endswith("_total")) >= 4
    finally:
        await broker.stop()


async def _dlq_count(group: str, topic: str, before: float) -> bool:
    return bool(_dead_letter_count(group, topic) > before)


async def _dead_letters_of(bootstrap: str, group: str) -> list[dict]:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(DEAD_LETTER.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        out = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                return out
            out += [r for recs in batch.values() for r in (orjson.loads(x.value) for x in recs)
                    if r["consumer"] == group]
    finally:
        await consumer.stop()


async def test_consumer_lag_counts_every_record_of_a_multi_record_batch(kafka_bootstrap: str) -> None:
    """Records produced together land in one record batch; lag must count each of them (a clean stop waits on
    it), not just the batch."""
    from aiokafka import AIOKafkaProducer

    from tally_shared.lag import consumer_lag
    from tally_shared.topics import Topic

    topic = Topic(f"lag-probe-{uuid.uuid4().hex[:8]}", 1, "test")
    from tally_shared.messaging import ensure_topics

    await ensure_topics(kafka_bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(topic.name, b"x") for _ in range(10)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    lag = await consumer_lag(kafka_bootstrap, f"never-consumed-{uuid.uuid4().hex[:8]}", [topic])
    assert sum(lag.values()) == 10


def _dead_letter_count(group: str, topic: str) -> float:
    """Dead letters of ``group`` on ``topic``, whatever their reason code."""
    total = 0.0
    for metric in DEAD_LETTERS.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels.get("consumer") == group and s.labels.get("topic") == topic:
                total += s.value
    return total


async def _own_topic(bootstrap: str) -> Topic:
    """A topic of the test's own: other tests of the session leave poison on the shared topics, which a new group
    reading from the earliest offset would dead-letter too."""
    topic = Topic(f"test-{uuid.uuid4().hex[:8]}", 1, "one test's topic")
    await ensure_topics(bootstrap, [topic])
    return topic
