"""The one way to publish events: an aiokafka producer with acks=all, every record keyed by its envelope's key and
carrying ``event-type`` / ``event-id`` headers.

Why not FastStream's publish: its per-message path costs several times more CPU and, with the broker's linger,
milliseconds of latency per event (measured in bench/scoring.py). Subscribing stays with FastStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from tally_shared import logs
from tally_shared.envelope import Envelope
from tally_shared.metrics import EVENTS_PUBLISHED, PUBLISH_SECONDS
from tally_shared.topics import Topic

MAX_REQUEST_BYTES = 16 * 1024 * 1024


class PublishFailed(Exception):
    """The broker did not acknowledge every event (not started, unreachable, or too slow)."""


@dataclass(frozen=True, slots=True)
class Record:
    """An event ready for the wire: what an outbox row holds."""

    topic: str
    key: str
    body: bytes
    event_type: str
    event_id: str

    @classmethod
    def of(cls, topic: Topic | str, envelope: Envelope, body: bytes | None = None) -> Record:
        return cls(topic if isinstance(topic, str) else topic.name, envelope.key,
                   body if body is not None else envelope.to_bytes(), envelope.type, str(envelope.id))

    @classmethod
    def from_body(cls, topic: str, key: str, body: bytes, event_type: str | None = None,
                  event_id: str | None = None) -> Record:
        """A stored event; the type and id are read from the body when not stored beside it."""
        if event_type is None or event_id is None:
            head = orjson.loads(body)
            event_type, event_id = event_type or head["type"], event_id or head["id"]
        return cls(topic, key, body, event_type, event_id)


def headers(event_type: str, event_id: str) -> list[tuple[str, bytes]]:
    # Consumers that need one type of a busy topic filter on the header without parsing; the consumer's logs name
    # the event id and the trace id of the request that caused the event.
    out = [("event-type", event_type.encode()), ("event-id", event_id.encode()),
           ("content-type", b"application/json")]
    trace_id = logs.context().get("trace_id")
    if trace_id:
        out.append(("trace-id", trace_id.encode()))
    return out


class Producer:
    """Start it in the service's lifespan (aiokafka binds to the running loop); ``publish`` waits for the broker's
    acknowledgement of every event and raises PublishFailed otherwise."""

    def __init__(self, bootstrap_servers: str, *, client_id: str, linger_ms: int = 0, timeout: float = 10.0,
                 max_request_size: int = MAX_REQUEST_BYTES) -> None:
        self._config = dict(
            bootstrap_servers=bootstrap_servers, client_id=client_id,
            # acks=all: a 2xx that promises "on the broker" needs the broker's acknowledgement.
            acks="all",
            # Tansu has no idempotent producer; exactly-once effects come from idempotent consumers instead.
            enable_idempotence=False,
            # No linger by default: a single event should not wait; batches form anyway while a send is in flight.
            linger_ms=linger_ms,
            max_request_size=max_request_size,
        )
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._config)
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def publish(self, topic: Topic | str, envelopes: Sequence[Envelope]) -> None:
        await self.send([Record.of(topic, env) for env in envelopes])

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records`` (in order per key) and wait until the broker acknowledged all of them."""
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise PublishFailed("the event producer is not started")
        start = time.perf_counter()
        try:
            futures = [
                await producer.send(r.topic, value=r.body, key=r.key.encode(),
                                    headers=headers(r.event_type, r.event_id))
                for r in records
            ]
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*futures)
        except Exception as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        elapsed = time.perf_counter() - start
        for r in records:
            EVENTS_PUBLISHED.labels(r.topic, r.event_type).inc()
        for name in {r.topic for r in records}:
            PUBLISH_SECONDS.labels(name).observe(elapsed)
