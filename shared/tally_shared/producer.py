"""The one way to publish events: aiokafka producers with acks=all and lz4, records partitioned as Kafka's default
partitioner does (murmur2 of the key), with the broker's acknowledgement reported per record.

Used by every service's outbox relays (``tally_shared.outbox``, through the ``Runtime``'s producer) and by ingest's
hot path (several connections, per-item outcomes for its 207 answers). Dead letters still go through FastStream's
broker publisher (``tally_shared.messaging``): they are rare, and the subscriber wrappers already hold that broker.

Why not FastStream's publish: its per-message path costs several times more CPU and, with the broker's linger,
milliseconds of latency per event (measured in bench/scoring.py). Subscribing stays with FastStream.

Records are grouped per partition and each group is handed to aiokafka as one finished batch (``create_batch`` /
``send_batch``): one future and one compression per partition and call instead of aiokafka's per-record
``send`` (a metadata wait, a partition lookup and a future per record). Records of one key stay in order (one
partition, one batch, batches queued in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer, codec
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record import default_records
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tally_shared import logs
from tally_shared.envelope import Envelope
from tally_shared.metrics import EVENTS_PUBLISHED, PUBLISH_SECONDS
from tally_shared.topics import Topic

MAX_REQUEST_BYTES = 16 * 1024 * 1024
# aiokafka's default batch size, what the relays always used.
DEFAULT_BATCH_BYTES = 16 * 1024

# A list: aiokafka's record builder takes nothing else.
Headers = list[tuple[str, bytes]]
_NO_HEADERS: Headers = []


class PublishFailed(Exception):
    """The broker did not acknowledge every event (not started, unreachable, or too slow)."""


class NotStarted(PublishFailed):
    """The producer is not connected (and could not connect, for a producer that connects on use)."""


class Sendable(Protocol):
    """A record as bytes; ``event_type`` labels the published-events metric."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def event_type(self) -> str: ...
    @property
    def headers(self) -> Headers | None: ...


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    event_type: str
    headers: Headers | None = None


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

    def message(self) -> Message:
        return Message(self.topic, self.key.encode(), self.body, self.event_type,
                       headers(self.event_type, self.event_id))


def headers(event_type: str, event_id: str) -> list[tuple[str, bytes]]:
    # Consumers that need one type of a busy topic filter on the header without parsing; the consumer's logs name
    # the event id and the trace id of the request that caused the event.
    out = [("event-type", event_type.encode()), ("event-id", event_id.encode()),
           ("content-type", b"application/json")]
    trace_id = logs.context().get("trace_id")
    if trace_id:
        out.append(("trace-id", trace_id.encode()))
    return out


# -- compression -----------------------------------------------------------------------------------------------------


def _lz4_fast(payload: Any) -> bytes:
    return codec.lz4_encode(payload, level=0)


# aiokafka compresses lz4 batches at level 9 (LZ4HC, the broker's own default) and has no setting for it: about
# eight times the CPU of lz4's fast mode for some 10% fewer bytes (measured on span JSON); on ingest's hot path it
# was the largest single cost after the mapping. Batches are compressed by the record builder, which looks the
# function up in its module (the compiled one and its pure-Python twin); consumers decompress either the same way.
default_records.lz4_encode = _lz4_fast
try:
    from aiokafka.record._crecords import default_records as _compiled

    _compiled.lz4_encode = _lz4_fast
except ImportError:  # the pure-Python builder only
    pass


# -- partitioning ----------------------------------------------------------------------------------------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as the Java client and aiokafka's DefaultPartitioner), with fewer Python operations."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length // 4
    if words:
        for k in struct.unpack_from(f"<{words}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """Kafka's default partitioner: the same partition for the same key as any other Kafka client, so every event
    about a trace stays on one partition whoever produces it."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A verdict arriving after the call gave up is not news (the call reported a timeout); retrieved so that
    # asyncio does not log it as never retrieved.
    if not fut.cancelled():
        fut.exception()


class _Pending:
    """Records of one partition waiting for their produce request, and the verdict they will share."""

    __slots__ = ("builder", "future")

    def __init__(self, builder: Any, future: asyncio.Future[None]) -> None:
        self.builder = builder
        self.future = future


class _Lane:
    """One partition, through the connection that owns it. Records of every concurrent call are appended to the
    open batch while the previous one is on its way; one batch at a time in flight, so a busy partition sends
    fewer, larger batches (as aiokafka's own accumulator does for records sent one by one) and per-key order is
    the order of appending."""

    __slots__ = ("partition", "producer", "queue", "task", "timeout", "topic")

    def __init__(self, producer: AIOKafkaProducer, topic: str, partition: int, timeout: float) -> None:
        self.producer = producer
        self.topic = topic
        self.partition = partition
        self.timeout = timeout
        self.queue: deque[_Pending] = deque()
        self.task: asyncio.Task[None] | None = None

    def add(self, key: bytes, value: bytes, headers: Headers) -> asyncio.Future[None]:
        """Append a record; the future of the batch it went into."""
        if self.queue:
            pending = self.queue[-1]
            if pending.builder.append(timestamp=None, key=key, value=value, headers=headers) is not None:
                return pending.future
        # None open, or the open one is full (and closed by the refusal): a new one takes the record (a first
        # record always fits: over-large ones were refused before).
        pending = _Pending(self.producer.create_batch(), asyncio.get_running_loop().create_future())
        pending.future.add_done_callback(_retrieve)
        pending.builder.append(timestamp=None, key=key, value=value, headers=headers)
        self.queue.append(pending)
        if self.task is None:
            self.task = asyncio.create_task(self._flush())
        return pending.future

    async def _flush(self) -> None:
        try:
            while self.queue:
                pending = self.queue.popleft()
                # Closed: nothing more is appended, and aiokafka sends it without waiting out the linger.
                pending.builder.close()
                try:
                    async with asyncio.timeout(self.timeout):
                        ack = await self.producer.send_batch(pending.builder, self.topic, partition=self.partition)
                        await ack
                except asyncio.CancelledError:
                    _fail(pending.future, NotStarted("the event producer was stopped"))
                    raise
                except Exception as exc:
                    _fail(pending.future, exc)
                else:
                    if not pending.future.done():
                        pending.future.set_result(None)
        finally:
            self.task = None

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        while self.queue:
            _fail(self.queue.popleft().future, NotStarted("the event producer was stopped"))


def _fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# -- the producer ----------------------------------------------------------------------------------------------------


class Producer:
    """Start it in the service's lifespan (aiokafka binds to the running loop).

    ``send_each`` reports, per record, None once the broker acknowledged it or the exception that stopped it;
    ``send`` / ``publish`` raise PublishFailed unless every record was acknowledged.

    ``producers``: connections, each owning a share of the partitions (partition % producers): aiokafka keeps one
    produce request in flight per connection, so a busy publisher (ingest) overlaps several with the broker while
    per-partition order stays that of one connection. ``timeout``: how long a call waits for the broker; a batch not
    delivered by then expires instead of being sent later behind the caller's back. ``connect_on_send``: a call
    finding the producer unconnected tries to connect first (ingest, which must answer 503 while the broker is
    away and take events again as soon as it is back) instead of failing at once (the relays, which retry)."""

    def __init__(self, bootstrap_servers: str, *, client_id: str, linger_ms: int = 0, timeout: float = 10.0,
                 max_request_size: int = MAX_REQUEST_BYTES, max_batch_bytes: int = DEFAULT_BATCH_BYTES,
                 producers: int = 1, connect_on_send: bool = False) -> None:
        self._config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers, client_id=client_id,
            # acks=all: a 2xx that promises "on the broker" needs the broker's acknowledgement.
            acks="all",
            # Tansu has no idempotent producer; exactly-once effects come from idempotent consumers instead.
            enable_idempotence=False,
            # Only records sent one by one linger; the batches built here are closed and go out at once.
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            # lz4 batches: events compress several-fold and the broker's cost follows the bytes it moves.
            compression_type="lz4",
            max_request_size=max_request_size,
            request_timeout_ms=int(timeout * 1000),
            retry_backoff_ms=100,
            metadata_max_age_ms=30_000,
            partitioner=partition,
        )
        self._timeout = timeout
        self._max_request_size = max_request_size
        self._count = max(1, producers)
        self._connect_on_send = connect_on_send
        # The first connection (also the one asked for metadata) and all of them.
        self._producer: AIOKafkaProducer | None = None
        self._all: list[AIOKafkaProducer] = []
        self._partitions: dict[str, list[int]] = {}
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._published: dict[tuple[str, str], Any] = {}
        self._seconds: dict[str, Any] = {}
        self._lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect every producer, or none (raises, having closed what it opened). Safe to call concurrently."""
        if self._producer is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._producer is not None:
                return
            opened: list[AIOKafkaProducer] = []
            try:
                for _ in range(self._count):
                    producer = AIOKafkaProducer(**self._config)
                    opened.append(producer)
                    await asyncio.wait_for(producer.start(), self._timeout)
            except BaseException:
                for producer in opened:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                raise
            self._all = opened
            self._producer = opened[0]

    async def stop(self) -> None:
        opened, self._all, self._producer = self._all, [], None
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            lane.close()
        for producer in opened:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def publish(self, topic: Topic | str, envelopes: Sequence[Envelope]) -> None:
        await self.send([Record.of(topic, env) for env in envelopes])

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records`` (in order per key) and wait until the broker acknowledged all of them."""
        if not records:
            return
        results = await self.send_each([r.message() for r in records])
        failed = next((r for r in results if r is not None), None)
        if failed is not None:
            raise PublishFailed(str(failed) or type(failed).__name__) from failed

    async def send_each(self, messages: Sequence[Sendable]) -> list[BaseException | None]:
        """Send ``messages`` (in order per key); for each, None once the broker acknowledged it, else why not:
        MessageSizeTooLargeError (over max_request_size), TimeoutError (no verdict in time), NotStarted, or the
        broker's error."""
        n = len(messages)
        results: list[BaseException | None] = [None] * n
        if not n:
            return results
        start = time.perf_counter()
        # batch verdict -> indices of the records it carries
        waiting: dict[asyncio.Future[None], list[int]] = {}
        try:
            if self._producer is None:
                if not self._connect_on_send:
                    raise NotStarted("the event producer is not started")
                try:
                    await self.start()
                except Exception as exc:
                    raise NotStarted(f"cannot connect to the broker ({type(exc).__name__}: {exc})") from exc
            limit = self._max_request_size
            estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes
            lanes = self._lanes
            for i, m in enumerate(messages):
                topic = m.topic
                parts = self._partitions.get(topic)
                if parts is None:
                    parts = await self._partitions_of(topic)
                hdrs = m.headers or _NO_HEADERS
                if estimate(m.key, m.value, hdrs) > limit:
                    results[i] = MessageSizeTooLargeError("the record is larger than the broker accepts")
                    continue
                p = parts[(murmur2(m.key) & 0x7FFFFFFF) % len(parts)]
                producer = self._producer if self._count == 1 else self._all[p % self._count]
                lane = lanes.get((topic, p))
                if lane is None or lane.producer is not producer:
                    lane = lanes[(topic, p)] = _Lane(producer, topic, p, self._timeout + 1.0)
                fut = lane.add(m.key, m.value, hdrs)
                members = waiting.get(fut)
                if members is None:
                    waiting[fut] = [i]
                else:
                    members.append(i)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Records already handed over still get their own verdict below.
            handed = {i for members in waiting.values() for i in members}
            for i in range(n):
                if results[i] is None and i not in handed:
                    results[i] = exc
        if waiting:
            # A little longer than the producers' own request timeout, so that their verdict (acknowledgement or
            # expiry) arrives first and is the one reported. asyncio.wait: a timeout must not cancel a batch's
            # verdict, which other calls' records may share.
            await asyncio.wait(waiting, timeout=self._timeout + 1.0)
            for fut, members in waiting.items():
                err: BaseException | None = fut.exception() if fut.done() else TimeoutError()
                if err is not None:
                    for i in members:
                        results[i] = err
        self._count_published(messages, results, time.perf_counter() - start)
        return results

    async def _partitions_of(self, topic: str) -> list[int]:
        assert self._producer is not None
        async with asyncio.timeout(self._timeout):
            parts = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return parts

    def _count_published(self, messages: Sequence[Sendable], results: list[BaseException | None],
                         elapsed: float) -> None:
        # Label children cached: a labels() lookup per record costs more than the count.
        counts: dict[tuple[str, str], int] = {}
        for m, r in zip(messages, results, strict=True):
            if r is None:
                k = (m.topic, m.event_type)
                counts[k] = counts.get(k, 0) + 1
        for k, c in counts.items():
            child = self._published.get(k)
            if child is None:
                child = self._published[k] = EVENTS_PUBLISHED.labels(*k)
            child.inc(c)
        for topic in {m.topic for m in messages} if len(messages) > 1 else (messages[0].topic,):
            hist = self._seconds.get(topic)
            if hist is None:
                hist = self._seconds[topic] = PUBLISH_SECONDS.labels(topic)
            hist.observe(elapsed)
