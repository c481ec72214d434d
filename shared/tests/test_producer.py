"""The shared producer against the real broker: Kafka's default partition for every key, a verdict per record (a
record too large for the broker refused alone), records of concurrent calls in order per key, headers as given,
several connections, and an unconnected producer failing every record (or connecting on use)."""

from __future__ import annotations

import asyncio
import random
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from tally_shared.producer import Message, NotStarted, Producer, partition
from tally_shared.topics import TRACES


def test_partitioner_matches_kafkas_default() -> None:
    rng = random.Random(11)
    parts = list(range(6))
    for n in range(70):
        key = bytes(rng.randrange(256) for _ in range(n))
        assert partition(key, parts, parts) == DefaultPartitioner()(key, parts, parts)


async def _read(bootstrap: str, prefix: bytes, count: int) -> list[tuple[bytes, bytes, int, list[tuple[str, bytes]]]]:
    consumer = AIOKafkaConsumer(TRACES.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[tuple[bytes, bytes, int, list[tuple[str, bytes]]]] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        if r.key is not None and r.key.startswith(prefix):
                            out.append((r.key, r.value or b"", r.partition, list(r.headers)))
    finally:
        await consumer.stop()
    return out


async def test_records_land_on_their_default_partition_in_order_with_a_verdict_each(kafka_bootstrap: str) -> None:
    prefix = uuid.uuid4().hex[:8].encode()
    producer = Producer(kafka_bootstrap, client_id="producer-test", producers=3, max_request_size=64 * 1024,
                        max_batch_bytes=4096)
    await producer.start()
    try:
        calls = [[Message(TRACES.name, prefix + b"-k%d" % (i % 7), b'{"call":%d,"n":%d}' % (c, i), "T",
                          [("event-id", b"%d-%d" % (c, i))] if i % 2 else None)
                 for i in range(40)] for c in range(4)]
        calls[1].insert(5, Message(TRACES.name, prefix + b"-big", b"x" * 100_000, "T"))
        results = await asyncio.gather(*(producer.send_each(m) for m in calls))
    finally:
        await producer.stop()
    assert all(r is None for r in results[0] + results[2] + results[3])
    assert isinstance(results[1][5], MessageSizeTooLargeError)
    assert all(r is None for i, r in enumerate(results[1]) if i != 5)

    found = await _read(kafka_bootstrap, prefix, 160)
    assert len(found) == 160 and not any(k.endswith(b"-big") for k, _, _, _ in found)
    parts = list(range(TRACES.partitions))
    by_key: dict[bytes, list[bytes]] = {}
    for key, value, p, headers in found:
        assert p == DefaultPartitioner()(key, parts, parts)
        by_key.setdefault(key, []).append(value)
        n = int(value.split(b'"n":')[1].rstrip(b"}"))
        assert (headers != []) == (n % 2 == 1)
    # Per key, each call's records in the order it gave them.
    for values in by_key.values():
        for c in range(4):
            ns = [int(v.split(b'"n":')[1].rstrip(b"}")) for v in values if v.startswith(b'{"call":%d,' % c)]
            assert ns == sorted(ns)


async def test_unconnected_producer_fails_every_record_or_connects_on_use(kafka_bootstrap: str) -> None:
    message = Message(TRACES.name, b"k", b"{}", "T")
    never = Producer("127.0.0.1:1", client_id="never", timeout=1.0)
    assert all(isinstance(r, NotStarted) for r in await never.send_each([message, message]))
    lazy = Producer(kafka_bootstrap, client_id="lazy", connect_on_send=True)
    try:
        assert await lazy.send_each([message]) == [None] and lazy.started
    finally:
        await lazy.stop()
