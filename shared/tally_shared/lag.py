"""Consumer lag: end offset minus committed offset, per partition, from ONE long-lived admin client and probe
consumer (building fresh clients every round costs connections and metadata requests, which showed up as latency
spikes on the services' request paths)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tally_shared.metrics import CONSUMER_LAG
from tally_shared.topics import Topic

log = logging.getLogger(__name__)


class LagProbe:
    """Measures consumer groups' lag. ``async with LagProbe(servers) as probe: await probe.lag(group, topics)``."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap = bootstrap_servers
        self._admin: AIOKafkaAdminClient | None = None
        self._probe: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._probe is not None:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        probe = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        try:
            await admin.start()
            await probe.start()
        except BaseException:
            await _close(admin, probe)
            raise
        self._admin, self._probe = admin, probe

    async def stop(self) -> None:
        admin, probe, self._admin, self._probe = self._admin, self._probe, None, None
        await _close(admin, probe)

    async def __aenter__(self) -> LagProbe:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def lag(self, group_id: str, topics: Iterable[Topic]) -> dict[TopicPartition, int]:
        await self.start()
        assert self._admin is not None and self._probe is not None
        probe = self._probe
        partitions = []
        for name in sorted({t.name for t in topics}):
            parts = probe.partitions_for_topic(name)
            if not parts:
                await probe._client.force_metadata_update()
                parts = probe.partitions_for_topic(name) or set()
            partitions += [TopicPartition(name, p) for p in sorted(parts)]
        ends = await _true_end_offsets(probe, partitions)
        committed = await self._admin.list_consumer_group_offsets(group_id, partitions=partitions)
        out: dict[TopicPartition, int] = {}
        for tp in partitions:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            out[tp] = max(0, ends.get(tp, 0) - done)
        return out

    async def report(self, groups: Mapping[str, Sequence[Topic]]) -> None:
        """Set the ``tally_consumer_lag`` gauge for every group."""
        for group, topics in groups.items():
            for tp, value in (await self.lag(group, topics)).items():
                CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(value)


CLOSE_TIMEOUT_SECONDS = 5.0


async def _close(admin: AIOKafkaAdminClient | None, probe: AIOKafkaConsumer | None) -> None:
    # Bounded: closing runs in a service's shutdown and in a cancelled reporter's ``finally``, and a client whose
    # connection is stuck mid-request must not hold either up for ever.
    if probe is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe.stop(), CLOSE_TIMEOUT_SECONDS)
    if admin is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), CLOSE_TIMEOUT_SECONDS)


async def _true_end_offsets(probe: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets that count every record. Tansu answers ListOffsets with the first offset of the last record
    batch + 1, which undercounts when that batch holds several records; a fetch's high watermark is exact. So
    read from just before the listed end and take the larger of the two."""
    ends: dict[TopicPartition, int] = dict(await probe.end_offsets(partitions))
    nonempty = [tp for tp in partitions if ends.get(tp, 0) > 0]
    if not nonempty:
        return ends
    probe.assign(nonempty)
    try:
        for tp in nonempty:
            probe.seek(tp, ends[tp] - 1)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(probe.highwater(tp) is None for tp in nonempty):
            await probe.getmany(*nonempty, timeout_ms=200)
        for tp in nonempty:
            high = probe.highwater(tp)
            if high is not None:
                ends[tp] = max(ends[tp], high)
    finally:
        # A long-lived probe must not keep fetching the partitions between measurements.
        probe.unsubscribe()
    return ends


async def consumer_lag(bootstrap_servers: str, group_id: str, topics: Iterable[Topic]) -> dict[TopicPartition, int]:
    """One measurement with clients of its own (for tools and tests; a service uses ``report_lag``)."""
    async with LagProbe(bootstrap_servers) as probe:
        return await probe.lag(group_id, topics)


async def report_lag(bootstrap_servers: str, groups: Mapping[str, Sequence[Topic]], interval: float = 5.0) -> None:
    """Background task: keep the ``tally_consumer_lag`` gauge current for these consumer groups, with one probe
    for the life of the task (reconnected after a failure)."""
    probe = LagProbe(bootstrap_servers)
    try:
        while True:
            try:
                await probe.report(groups)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("consumer lag not measured: %r", exc)
                await probe.stop()
            await asyncio.sleep(interval)
    finally:
        await probe.stop()
