"""The lag reporter: exact counts from one long-lived probe, reused round after round."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tally_shared import lag as lag_mod
from tally_shared.lag import LagProbe, report_lag
from tally_shared.messaging import ensure_topics
from tally_shared.metrics import CONSUMER_LAG
from tally_shared.topics import Topic


async def _topic_with(bootstrap: str, n: int) -> Topic:
    topic = Topic(f"lag-{uuid.uuid4().hex[:8]}", 2, "test")
    await ensure_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic.name, b"x", partition=i % 2) for i in range(n)])
    finally:
        await producer.stop()
    return topic


async def test_probe_measures_again_with_the_same_clients(kafka_bootstrap: str) -> None:
    topic = await _topic_with(kafka_bootstrap, 6)
    group = f"never-{uuid.uuid4().hex[:8]}"
    async with LagProbe(kafka_bootstrap) as probe:
        first = await probe.lag(group, [topic])
        admin = probe._admin
        second = await probe.lag(group, [topic])
        assert probe._admin is admin
    assert sum(first.values()) == sum(second.values()) == 6
    assert {tp.partition: v for tp, v in first.items()} == {0: 3, 1: 3}


async def test_reporter_sets_the_gauge_and_opens_clients_once(kafka_bootstrap: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    opened: list[object] = []

    class CountingAdmin(AIOKafkaAdminClient):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            opened.append(self)

    monkeypatch.setattr(lag_mod, "AIOKafkaAdminClient", CountingAdmin)
    topic = await _topic_with(kafka_bootstrap, 4)
    group = f"never-{uuid.uuid4().hex[:8]}"
    task = asyncio.create_task(report_lag(kafka_bootstrap, {group: [topic]}, interval=0.05))
    try:
        # several rounds at 0.05 s (a busy machine may need longer for the first one)
        for _ in range(200):
            await asyncio.sleep(0.1)
            if CONSUMER_LAG.labels(group, topic.name, "1")._value.get() == 2:
                break
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert CONSUMER_LAG.labels(group, topic.name, "0")._value.get() == 2
    assert CONSUMER_LAG.labels(group, topic.name, "1")._value.get() == 2
    assert len(opened) == 1
