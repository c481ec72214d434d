"""Consumer-lag gauge for scoring's consumer group, from one long-lived admin client and probe consumer.

The shared reporter builds fresh Kafka clients every round; the connection and metadata work that costs shows up
as latency spikes on this service's single-score path, so scoring keeps its clients open instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tally_shared.metrics import CONSUMER_LAG
from tally_shared.topics import Topic

log = logging.getLogger(__name__)


async def report_lag(bootstrap_servers: str, group_id: str, topics: Sequence[Topic], interval: float = 10.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
    try:
        while True:
            try:
                ends = await probe.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
                for tp in partitions:
                    meta = committed.get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else 0
                    CONSUMER_LAG.labels(group_id, tp.topic, str(tp.partition)).set(max(0, ends.get(tp, 0) - done))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("consumer lag not measured: %r", exc)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await probe.stop()
        with contextlib.suppress(Exception):
            await admin.close()
