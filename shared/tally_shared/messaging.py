"""Kafka plumbing: broker factory, publishing with broker acknowledgement, typed subscribers with a dead-letter
topic (consumer lag: ``tally_shared.lag``).

Subscribers are thin: they decode the envelope (poison goes to the dead-letter topic), then delegate to a plain
handler ``(envelope, payload) -> None``. A handler that raises is retried (the offset is not committed and the
consumer seeks back), so handlers must be idempotent (see ``tally_shared.claims``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.prometheus.provider import BatchKafkaMetricsSettingsProvider, settings_provider_factory
from faststream.prometheus.middleware import PrometheusMiddleware
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from tally_shared import deadletters
from tally_shared import events as _events  # noqa: F401  (registers every payload type)
from tally_shared.envelope import Envelope, Payload, PoisonMessage, decode
from tally_shared.logs import log_context
from tally_shared.metrics import (
    DEAD_LETTERS,
    EVENT_DELAY,
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
    HANDLER_ERRORS,
    PUBLISH_SECONDS,
)
from tally_shared.producer import MAX_REQUEST_BYTES, Producer
from tally_shared.producer import headers as producer_headers
from tally_shared.topics import ALL_TOPICS, DEAD_LETTER, Topic

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Payload], Awaitable[None]]

RETRY_BACKOFF_SECONDS = 1.0

# Group membership timings for every subscriber. A member that dies without leaving (SIGKILL, lost host) keeps
# its partitions until the broker gives up on its session; the survivors learn of the rebalance on their next
# heartbeat and rejoin (Tansu holds every join for a fixed 3 s). So a dead replica's partitions reach a survivor
# after about session + heartbeat + 3 s: 9 s measured on Tansu (tests/test_group_takeover.py), against 17.7 s
# with aiokafka's defaults (10 s session, 3 s heartbeat). 6 s is the lowest session Apache Kafka accepts by
# default (group.min.session.timeout.ms). Polls are far apart only while a batch is applied, so
# max_poll_interval is generous but not minutes.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 500
REBALANCE_TIMEOUT_MS = 6_000
MAX_POLL_INTERVAL_MS = 120_000


class LogContextMiddleware(BaseMiddleware):
    """Every line logged while a message is handled names the consumer group, and for a single message its event
    id and the trace id it was published under (``tally_shared.logs``)."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        fields: dict[str, object] = {}
        consumer = getattr(msg, "consumer", None)
        group = getattr(consumer, "_group_id", None)
        if group:
            fields["consumer"] = group
        if not isinstance(msg.raw_message, tuple):
            headers = msg.headers or {}
            event_id = headers.get("event-id") or _event_id_from_head(msg.body)
            if event_id:
                fields["event_id"] = event_id
            if headers.get("trace-id"):
                fields["trace_id"] = headers["trace-id"]
        if not fields:
            return await call_next(msg)
        with log_context(**fields):
            return await call_next(msg)


_EVENT_ID = re.compile(rb'^\{"id":"([0-9a-f-]{36})"')


def _event_id_from_head(body: Any) -> str | None:
    # Envelopes are serialised with their id first; events published before the event-id header have only that.
    if isinstance(body, bytes | bytearray):
        found = _EVENT_ID.match(body[:48])
        if found:
            return found.group(1).decode()
    return None


class _BatchSizes(BatchKafkaMetricsSettingsProvider):
    """FastStream's consume metrics for a batch, its size summed instead of measured on a joined copy of every
    record's bytes (a copy of the whole batch for one number)."""

    __slots__ = ()

    def get_consume_attrs_from_message(self, msg: Any) -> Any:
        records = msg.raw_message
        return {
            "destination_name": records[0].topic,
            "message_size": sum(len(r.value or b"") for r in records),
            "messages_count": len(records),
        }


def _metrics_settings(msg: Any) -> Any:
    return _BatchSizes() if isinstance(msg, Sequence) else settings_provider_factory(msg)


class _PrometheusMiddleware(KafkaPrometheusMiddleware):
    """FastStream's Kafka metrics (the same names and labels), with ``_BatchSizes`` for batches."""

    def __init__(self, *, registry: CollectorRegistry, app_name: str) -> None:
        PrometheusMiddleware.__init__(self, settings_provider_factory=_metrics_settings, registry=registry,
                                      app_name=app_name)


def make_broker(bootstrap_servers: str, *, service: str, registry: CollectorRegistry) -> KafkaBroker:
    """The FastStream broker that runs a service's subscribers (events are published with
    ``tally_shared.producer.Producer``)."""
    return KafkaBroker(
        bootstrap_servers,
        client_id=f"tally-{service}",
        # acks=all: a publish returns only once the broker has the event.
        acks="all",
        # Tansu has no idempotent producer; exactly-once effects come from idempotent consumers instead.
        enable_idempotence=False,
        # Fewer, larger, lz4-compressed produce batches: the broker's cost follows requests and bytes (Tansu: ~80 ->
        # ~60 us/span in bench/pipeline.py); lz4 costs the producers and consumers next to nothing.
        linger_ms=5,
        max_batch_size=1024 * 1024,
        compression_type="lz4",
        max_request_size=MAX_REQUEST_BYTES,
        middlewares=[LogContextMiddleware, _PrometheusMiddleware(registry=registry, app_name=f"tally-{service}")],
        logger=logging.getLogger(f"tally.{service}.kafka"),
    )


async def publish(target: KafkaBroker | Producer, topic: Topic, envelopes: Sequence[Envelope]) -> None:
    """Publish and wait until the broker acknowledged every event (raises if any was not), with the headers and
    metrics of ``Producer.send``. ``target``: a started Producer, or a connected broker (tools, tests)."""
    if not envelopes:
        return
    if isinstance(target, Producer):
        await target.publish(topic, envelopes)
        return
    start = time.perf_counter()
    await asyncio.gather(
        *(
            target.publish(
                env.to_bytes(),
                topic=topic.name,
                key=env.key.encode(),
                headers={k: v.decode() for k, v in producer_headers(env.type, str(env.id))},
            )
            for env in envelopes
        )
    )
    PUBLISH_SECONDS.labels(topic.name).observe(time.perf_counter() - start)
    for env in envelopes:
        EVENTS_PUBLISHED.labels(topic.name, env.type).inc()


async def dead_letter(
    broker: KafkaBroker, *, consumer: str, raw: bytes, reason: str, topic: str, partition: int, offset: int,
    code: str = "handler", key: bytes | None = None,
) -> None:
    """Publish the refusal with what the original says about itself (``tally_shared.deadletters.DeadLetter``)."""
    record = deadletters.build(consumer=consumer, raw=raw, reason=reason, code=code, topic=topic,
                               partition=partition, offset=offset, record_key=key)
    await broker.publish(record.to_bytes(), topic=DEAD_LETTER.name, key=f"{topic}:{partition}".encode())
    DEAD_LETTERS.labels(consumer, topic, record.reason_code).inc()
    log.warning("dead-lettered %s[%s]@%s for %s (%s): %s", topic, partition, offset, consumer, record.reason_code,
                reason)


# SQLSTATE classes that mean "this data can never be applied": data exceptions (value too long, bad number),
# integrity violations that survive a retry, and statements the database rejects as written.
_DETERMINISTIC_SQLSTATE_CLASSES = ("22", "23", "42")


def is_deterministic(exc: BaseException) -> bool:
    """Would retrying the same event fail the same way? Then it belongs on the dead-letter topic, not in an
    endless retry loop that blocks its partition. Connection losses, timeouts and deadlocks are transient."""
    if isinstance(exc, PoisonMessage | ValidationError | ValueError | TypeError | KeyError | LookupError):
        return True
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
        state = deadletters.sqlstate(exc)
        return state is not None and state[:2] in _DETERMINISTIC_SQLSTATE_CLASSES
    return False


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, PoisonMessage):
        return exc.reason
    text = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0] if str(exc) else ""
    return f"handler failed: {type(exc).__name__}: {text}"[:1000]


def subscribe(
    broker: KafkaBroker,
    topic: Topic,
    *,
    group_id: str,
    handler: Handler,
    types: Iterable[str] | None = None,
    validate: Callable[[Envelope, Payload], None] | None = None,
) -> Any:
    """Register a subscriber for one topic in consumer group ``group_id``.

    ``types`` filters event types (others are acknowledged and ignored). ``validate`` may raise PoisonMessage for
    a message that parses but can never be applied (it is dead-lettered, not retried).
    """
    wanted = frozenset(types) if types is not None else None

    @broker.subscriber(
        topic.name,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{group_id}:{topic.name}",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    async def _consume(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        record = raw[0] if isinstance(raw, tuple) else raw
        body: bytes = msg.body
        try:
            env, payload = decode(body)
            if wanted is not None and env.type not in wanted:
                EVENTS_CONSUMED.labels(group_id, topic.name, env.type, "ignored").inc()
                return
            if validate is not None:
                validate(env, payload)
        except PoisonMessage as exc:
            await dead_letter(
                broker, consumer=group_id, raw=body, reason=exc.reason, topic=record.topic,
                partition=record.partition, offset=record.offset, code=exc.code, key=record.key,
            )
            return
        try:
            await handler(env, payload)
        except PoisonMessage as exc:
            await dead_letter(
                broker, consumer=group_id, raw=body, reason=exc.reason, topic=record.topic,
                partition=record.partition, offset=record.offset, code=exc.code, key=record.key,
            )
            return
        except Exception as exc:
            HANDLER_ERRORS.labels(group_id, topic.name).inc()
            if is_deterministic(exc):
                await dead_letter(
                    broker, consumer=group_id, raw=body, reason=failure_reason(exc), topic=record.topic,
                    partition=record.partition, offset=record.offset, code=deadletters.reason_code(exc),
                    key=record.key,
                )
                return
            log.exception("handler %s failed on %s; will retry", group_id, env.type)
            await asyncio.sleep(RETRY_BACKOFF_SECONDS)
            raise
        EVENTS_CONSUMED.labels(group_id, topic.name, env.type, "applied").inc()
        EVENT_DELAY.labels(group_id).observe(max(0.0, (datetime.now(UTC) - env.occurred_at).total_seconds()))

    return _consume


def _decode_pair(body: bytes, _partition: int) -> tuple[Envelope, Payload]:
    return decode(body)


async def _undecoded(_msg: Any) -> None:
    """FastStream's own decoding of a batch json-parses every record (the handler reads the raw records and
    decodes them itself): skipped."""
    return None


def _meta(item: Any) -> tuple[str, datetime]:
    env = item[0] if isinstance(item, tuple) else item
    return env.type, env.occurred_at


def subscribe_batch(
    broker: KafkaBroker,
    topics: Sequence[Topic],
    *,
    group_id: str,
    handler: Callable[[list[Any]], Awaitable[Any]],
    max_records: int = 500,
    prefilter: Callable[[bytes], bool] | None = None,
    prefilter_topics: Collection[str] | None = None,
    decoder: Callable[[bytes, int], Any] = _decode_pair,
    max_partition_fetch_bytes: int = 8 * 1024 * 1024,
) -> Any:
    """Batch subscriber over several topics: poison messages are dead-lettered one by one, the rest are handed
    to ``handler`` together (one transaction, bulk writes). ``prefilter`` sees each record's raw bytes first: one
    it refuses is acknowledged with its batch without being parsed (a consumer that needs few of a busy topic's
    events skips the rest cheaply, with one offset commit per batch).

    ``decoder(body, partition)`` turns a record into what ``handler`` receives (default: ``(Envelope, Payload)``
    pairs; ``tally_shared.records.decode_event`` gives lean dicts); it raises PoisonMessage for poison, and what
    it returns has ``type`` and ``occurred_at`` (itself or its first element). A partition fetch holds up to
    ``max_partition_fetch_bytes`` (aiokafka's 1 MiB default is ~100 traces with their observations: small batches
    on a busy partition)."""
    applied_delay = EVENT_DELAY.labels(group_id)
    batch_errors = HANDLER_ERRORS.labels(group_id, "batch")

    @broker.subscriber(
        *(t.name for t in topics),
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=50,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        fetch_max_bytes=max(64 * 1024 * 1024, max_partition_fetch_bytes),
        decoder=_undecoded,
        title=f"{group_id}:batch",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    async def _consume(msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        good: list[Any] = []
        origin: list[Any] = []
        for record in records:
            body: bytes = record.value or b""
            if (prefilter is not None and (prefilter_topics is None or record.topic in prefilter_topics)
                    and not prefilter(body)):
                continue
            try:
                item = decoder(body, record.partition)
            except PoisonMessage as exc:
                await dead_letter(
                    broker, consumer=group_id, raw=body, reason=exc.reason, topic=record.topic,
                    partition=record.partition, offset=record.offset, code=exc.code, key=record.key,
                )
                continue
            good.append(item)
            origin.append(record)
        if not good:
            return

        async def apply(lo: int, hi: int) -> None:
            # A batch that fails for a reason that will never go away is split in halves until the events that
            # cause it stand alone; those go to the dead-letter topic, the rest are applied. Handlers are
            # idempotent, so re-applying the half that had succeeded changes nothing.
            try:
                await handler(good[lo:hi])
            except Exception as exc:
                if not is_deterministic(exc):
                    raise
                batch_errors.inc()
                if hi - lo == 1:
                    record = origin[lo]
                    await dead_letter(
                        broker, consumer=group_id, raw=record.value or b"", reason=failure_reason(exc),
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        code=deadletters.reason_code(exc), key=record.key,
                    )
                    return
                mid = (lo + hi) // 2
                await apply(lo, mid)
                await apply(mid, hi)

        try:
            await apply(0, len(good))
        except Exception:
            batch_errors.inc()
            log.exception("batch handler %s failed on %d events; will retry", group_id, len(good))
            await asyncio.sleep(RETRY_BACKOFF_SECONDS)
            raise
        # counted per batch and type, not per record (a labels() lookup per record is measurable)
        now = datetime.now(UTC)
        per_type: dict[str, int] = {}
        for item in good:
            etype, occurred_at = _meta(item)
            per_type[etype] = per_type.get(etype, 0) + 1
            applied_delay.observe(max(0.0, (now - occurred_at).total_seconds()))
        for etype, n in per_type.items():
            EVENTS_CONSUMED.labels(group_id, "batch", etype, "applied").inc(n)

    return _consume


async def ensure_topics(bootstrap_servers: str, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Create any missing topic with its partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
            for t in topics
            if t.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()
