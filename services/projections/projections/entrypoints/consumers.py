"""The one batch subscriber over every topic the read models need, and the reader of the dead-letter topic."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.application import dead_letters
from projections.application.handlers import CONSUMED_TOPICS, Deps, apply_by_partition
from tally_shared import deadletters, messaging
from tally_shared.messaging import RETRY_BACKOFF_SECONDS, is_deterministic, subscribe_batch
from tally_shared.records import Event, decode_event
from tally_shared.topics import DEAD_LETTER

log = logging.getLogger(__name__)


# partitions of one batch applied at a time, each in its own transaction (and its own pooled connection)
PARTITIONS_AT_ONCE = 2
# A batch smaller than this is applied in one transaction. A transaction costs about 1.5-2.5 ms of this process's
# CPU whatever it holds (pool checkout and ping, begin, claim, slot locks, tombstones, each projection's statements,
# commit); split per partition (6 of tally.traces), a batch of 60 trace events as bench/pipeline.py's load brings
# them costs 370 µs CPU an event against 200 whole, 200 events 225 against 175 (bench/projections.py --pipeline).
# Batches this large come with a backlog, where applying partitions side by side is what keeps up.
SPLIT_FROM = 1000


def concurrency_for(batch_size: int, partitions_at_once: int, split_from: int = SPLIT_FROM) -> int:
    """How many partitions of a batch of ``batch_size`` events to apply at a time (1: the batch whole)."""
    return partitions_at_once if batch_size >= split_from else 1


def register(broker: KafkaBroker, deps: Deps, *, group_id: str, max_records: int,
             partitions_at_once: int = PARTITIONS_AT_ONCE, split_from: int = SPLIT_FROM) -> Any:
    async def handle(batch: list[Event]) -> None:
        await apply_by_partition(batch, deps, concurrency=concurrency_for(len(batch), partitions_at_once, split_from))

    # lean decoding: envelopes straight to the dicts the projections turn into rows
    return subscribe_batch(broker, CONSUMED_TOPICS, group_id=group_id, handler=handle, max_records=max_records,
                           decoder=decode_event)


def register_dead_letters(broker: KafkaBroker, sessions: async_sessionmaker[AsyncSession], *, group_id: str) -> Any:
    """Dead-letter records are not envelopes, so this is a plain subscriber (``subscribe_batch`` would send an
    undecodable record to the dead-letter topic: a loop). Its own group keeps the read models' batches free of
    them. Every record is stored (``deadletters.parse`` never refuses one); a failure to store is retried."""

    @broker.subscriber(
        DEAD_LETTER.name,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        batch=True,
        max_records=500,
        batch_timeout_ms=50,
        title=f"{group_id}:batch",
        session_timeout_ms=messaging.SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=messaging.HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms=messaging.REBALANCE_TIMEOUT_MS,
        max_poll_interval_ms=messaging.MAX_POLL_INTERVAL_MS,
    )
    async def _consume(msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        parsed = [deadletters.parse(r.value or b"", topic=r.topic, partition=r.partition, offset=r.offset)
                  for r in records]
        try:
            await dead_letters.record(sessions, parsed)
        except Exception as exc:
            if not is_deterministic(exc):
                log.exception("could not store %d dead letters; will retry", len(parsed))
                await asyncio.sleep(RETRY_BACKOFF_SECONDS)
                raise
            # Data the table cannot take must not stop the reader: one by one, and what still fails is kept as
            # an unreadable record (its raw bytes), or, failing that too, only logged.
            for rec, parsed_one in zip(records, parsed, strict=True):
                await _store_one(sessions, rec, parsed_one)

    return _consume


async def _store_one(sessions: async_sessionmaker[AsyncSession], rec: Any, parsed: deadletters.DeadLetter) -> None:
    try:
        await dead_letters.record(sessions, [parsed])
        return
    except Exception as exc:
        if not is_deterministic(exc):
            raise
        reason = f"could not store dead letter: {type(exc).__name__}"
    fallback = deadletters.build(consumer="unknown", raw=rec.value or b"", reason=reason, code="decode",
                                 topic=DEAD_LETTER.name, partition=rec.partition, offset=rec.offset)
    try:
        await dead_letters.record(sessions, [fallback])
    except Exception as exc:
        if not is_deterministic(exc):
            raise
        log.error("dropped unstorable dead-letter record %s[%s]@%s: %s", rec.topic, rec.partition, rec.offset, exc)
