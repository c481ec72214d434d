"""Publishing with the broker's acknowledgement, many messages at once.

Ingest's hot path sends thousands of already-serialised envelopes per second, so it talks to aiokafka directly
(one producer, acks=all, messages of concurrent requests batched together) rather than through FastStream's
per-message publish. Same settings as ``tally_shared.messaging.make_broker``: acks=all and no idempotent
producer (Tansu has none); exactly-once effects come from the consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.adapters.partitioner import partition
from ingest.domain.batch import Outgoing
from tally_shared.metrics import EVENTS_PUBLISHED, PUBLISH_SECONDS


class PublishError(Exception):
    """The broker did not acknowledge a message. ``status`` is what to tell the client about its items."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class Publisher(Protocol):
    async def send_all(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        """Publish every message; for each, None once the broker acknowledged it, else the error."""
        ...


def _as_publish_error(exc: BaseException) -> PublishError:
    if isinstance(exc, MessageSizeTooLargeError):
        return PublishError(413, "message_too_large", "the event is larger than the broker accepts")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return PublishError(503, "broker_timeout", "the broker did not acknowledge in time; not stored, retry")
    if isinstance(exc, KafkaError):
        return PublishError(503, "broker_unavailable", f"the broker refused or is unreachable ({type(exc).__name__});"
                            " not stored, retry")
    return PublishError(503, "broker_error", f"publish failed ({type(exc).__name__}); not stored, retry")


class KafkaPublisher:
    def __init__(self, bootstrap_servers: str, *, timeout: float, linger_ms: int, max_message_bytes: int,
                 max_batch_bytes: int = 4 * 1024 * 1024, producers: int = 1,
                 client_id: str = "tally-ingest") -> None:
        self._timeout = timeout
        self._count = max(1, producers)
        self._all: list[AIOKafkaProducer] = []
        self._partitions: dict[str, list[int]] = {}
        self._config: dict[str, object] = dict(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            max_request_size=max_message_bytes,
            # lz4 batches: trace events compress several-fold and the broker's cost follows the bytes it moves.
            compression_type="lz4",
            # A batch that cannot reach a leader expires after this, failing its futures: nothing queued while the
            # broker is away is sent later behind the client's back (it was told 503 and will retry).
            request_timeout_ms=int(timeout * 1000),
            retry_backoff_ms=100,
            metadata_max_age_ms=30_000,
            partitioner=partition,
        )
        self._producer: AIOKafkaProducer | None = None
        self._started = False
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        # The broker may be down when ingest starts: ingest still serves (503s) and connects once it is back.
        try:
            await self._ensure_started()
        except Exception:
            pass

    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self._start()

    async def _start(self) -> None:
        # Created here, inside the running loop; a producer that failed to start cannot be started again.
        started: list[AIOKafkaProducer] = []
        try:
            for _ in range(self._count):
                producer = AIOKafkaProducer(**self._config)
                started.append(producer)
                await asyncio.wait_for(producer.start(), self._timeout)
        except BaseException:
            for producer in started:
                with contextlib.suppress(Exception):
                    await producer.stop()
            raise
        self._all = started
        self._producer = started[0]
        self._started = True

    async def stop(self) -> None:
        for producer in self._all:
            await producer.stop()
        self._all = []
        self._producer = None
        self._started = False

    async def _route(self, m: Outgoing) -> asyncio.Future[object]:
        """Send through the producer that owns the message's partition: each producer keeps one request in
        flight, so several overlap with the broker while per-partition order stays that of one producer."""
        assert self._producer is not None
        if self._count == 1:
            return await self._producer.send(m.topic, m.value, key=m.key)
        parts = self._partitions.get(m.topic)
        if parts is None:
            parts = self._partitions[m.topic] = sorted(await self._producer.partitions_for(m.topic))
        p = partition(m.key, parts, parts)
        return await self._all[p % self._count].send(m.topic, m.value, key=m.key, partition=p)

    async def send_all(self, messages: Sequence[Outgoing]) -> list[PublishError | None]:
        if not messages:
            return []
        start = time.perf_counter()
        deadline = time.monotonic() + self._timeout
        results: list[PublishError | None] = [None] * len(messages)
        futures: list[tuple[int, asyncio.Future[object]]] = []
        try:
            await self._ensure_started()
            assert self._producer is not None
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + self._timeout):
                for i, m in enumerate(messages):
                    if m.error is not None:
                        results[i] = PublishError(400, "invalid", m.error)
                        continue
                    try:
                        fut = await self._route(m)
                    except (MessageSizeTooLargeError, ValueError) as exc:
                        results[i] = _as_publish_error(exc)
                        continue
                    futures.append((i, fut))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            err = _as_publish_error(exc)
            sent = {i for i, _ in futures}
            for i in range(len(messages)):
                if i not in sent and results[i] is None:
                    results[i] = err
        if futures:
            # A little longer than the producer's own request timeout so that its verdict (ack or expiry)
            # arrives first and is the one reported.
            remaining = max(0.1, deadline - time.monotonic()) + 1.0
            done, _ = await asyncio.wait([f for _, f in futures], timeout=remaining)
            for i, fut in futures:
                if fut not in done:
                    results[i] = _as_publish_error(TimeoutError())
                elif fut.exception() is not None:
                    results[i] = _as_publish_error(fut.exception())  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        counts: Counter[tuple[str, str]] = Counter(
            (m.topic, m.event_type) for m, r in zip(messages, results, strict=True) if r is None
        )
        for topic in {m.topic for m in messages}:
            PUBLISH_SECONDS.labels(topic).observe(elapsed)
        for (topic, event_type), n in counts.items():
            EVENTS_PUBLISHED.labels(topic, event_type).inc(n)
        return results
