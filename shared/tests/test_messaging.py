"""Subscribers against the real broker: events reach the handler, poison reaches the dead-letter topic."""

import asyncio
import uuid

import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events import TraceData, TraceIngested
from tally_shared.messaging import make_broker, publish, subscribe
from tally_shared.metrics import DEAD_LETTERS
from tally_shared.topics import DEAD_LETTER, TRACES


async def test_events_reach_handler_and_poison_is_dead_lettered(kafka_bootstrap: str) -> None:
    group = f"test-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    seen: list[Envelope] = []
    done = asyncio.Event()

    async def handler(env: Envelope, payload: Payload) -> None:
        if env.project == marker:
            seen.append(env)
            done.set()

    broker = make_broker(kafka_bootstrap, service="test", registry=CollectorRegistry())
    subscribe(broker, TRACES, group_id=group, handler=handler)
    dlq = AIOKafkaConsumer(DEAD_LETTER.name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="latest",
                           group_id=f"{group}-dlq")
    before = DEAD_LETTERS.labels(group, TRACES.name)._value.get()
    await broker.start()
    await dlq.start()
    try:
        await asyncio.sleep(0.5)
        poison = f"not json {marker}".encode()
        await broker.publish(poison, topic=TRACES.name, key=b"k")
        env = make_envelope(TraceIngested(trace_id="t1", trace=TraceData(id="t1", name="n")), project=marker, key="t1")
        await publish(broker, TRACES, [env])
        await asyncio.wait_for(done.wait(), 20)
        assert [e.id for e in seen] == [env.id]

        async def find_dead_letter() -> dict:  # type: ignore[type-arg]
            while True:
                batch = await dlq.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        rec = orjson.loads(r.value)
                        if marker in __import__("base64").b64decode(rec["original_b64"]).decode(errors="replace"):
                            return rec  # type: ignore[no-any-return]

        rec = await asyncio.wait_for(find_dead_letter(), 20)
        assert rec["consumer"] == group and rec["topic"] == TRACES.name and "not JSON" in rec["reason"]
        assert DEAD_LETTERS.labels(group, TRACES.name)._value.get() == before + 1
    finally:
        await dlq.stop()
        await broker.stop()
