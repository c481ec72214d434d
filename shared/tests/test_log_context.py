"""Lines logged while a subscriber handles a message name its consumer group, event id and the trace id of the
request that published it (set by the broker's middleware, whatever the subscriber)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from prometheus_client import CollectorRegistry

from tally_shared import logs
from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.events import TraceData, TraceIngested
from tally_shared.messaging import ensure_topics, make_broker, subscribe
from tally_shared.producer import Producer
from tally_shared.topics import Topic


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"message": record.getMessage(), **logs.context()})


async def test_handler_logs_carry_group_event_and_trace(kafka_bootstrap: str) -> None:
    topic = Topic(f"test-{uuid.uuid4().hex[:8]}", 1, "one test's topic")
    await ensure_topics(kafka_bootstrap, [topic])
    group = f"logctx-{uuid.uuid4().hex[:8]}"
    capture = Capture()
    handler_log = logging.getLogger("test.logctx")
    handler_log.addHandler(capture)
    handler_log.setLevel(logging.INFO)
    done = asyncio.Event()

    async def handler(env: Envelope, payload: Payload) -> None:
        handler_log.info("handling %s", env.key)
        done.set()

    broker = make_broker(kafka_bootstrap, service="test", registry=CollectorRegistry())
    subscribe(broker, topic, group_id=group, handler=handler)
    producer = Producer(kafka_bootstrap, client_id="test")
    await broker.start()
    await producer.start()
    try:
        env = make_envelope(TraceIngested(trace_id="t1", trace=TraceData(id="t1", name="n")), project="p", key="t1")
        with logs.log_context(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
            await producer.publish(topic, [env])
        await asyncio.wait_for(done.wait(), 30)
    finally:
        handler_log.removeHandler(capture)
        await producer.stop()
        await broker.stop()
    [line] = [c for c in capture.lines if c["message"] == "handling t1"]
    assert line["consumer"] == group and line["event_id"] == str(env.id)
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "consumer" not in logs.context()
