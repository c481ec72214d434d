"""The broker's raw ceiling: how fast plain aiokafka produces (acks=all, as Tally's services do) and consumes
messages of a given size on this machine, with nothing else in the way. ``bench/ingest.py`` calls
``measure_broker`` in its own run and reports ingest as a fraction of it.

Starts its own Tansu broker (unless KAFKA_BOOTSTRAP_SERVERS is set); loopback only; bounded to ~20 s.

    .venv/bin/python bench/broker.py [--size 1024] [--seconds 5] [--producers 1 --producers 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from tally_shared import infra


@dataclass
class Ceiling:
    size: int
    producers: int
    produced: int
    produce_seconds: float
    consumed: int
    consume_seconds: float

    @property
    def produce_msgs(self) -> float:
        return self.produced / self.produce_seconds

    @property
    def produce_mb(self) -> float:
        return self.produced * self.size / self.produce_seconds / 1e6

    @property
    def consume_msgs(self) -> float:
        return self.consumed / self.consume_seconds if self.consume_seconds else 0.0

    @property
    def consume_mb(self) -> float:
        return self.consumed * self.size / self.consume_seconds / 1e6 if self.consume_seconds else 0.0


# pid of the broker this bench started (None when KAFKA_BOOTSTRAP_SERVERS names someone else's).
BROKER_PID: int | None = None


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a Tansu broker of our own for the duration."""
    global BROKER_PID
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    port = infra.free_port()
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as tmp:
        proc = infra.start_tansu(port, log_path=Path(tmp) / "tansu.log")
        BROKER_PID = proc.pid
        try:
            yield f"127.0.0.1:{port}"
        finally:
            infra.stop_process(proc)


async def measure_broker(bootstrap: str, *, size: int = 1024, seconds: float = 5.0, partitions: int = 6,
                         keys: int = 10_000, producers: int = 1) -> Ceiling:
    """Produce ``size``-byte messages with distinct keys for ``seconds`` (acks=all, batched the way ingest's
    producers are; with ``producers`` > 1 each owns partition p where p % producers is its index, as in ingest),
    then consume them all back."""
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    pool = [AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
                             max_batch_size=4 * 1024 * 1024, max_request_size=16 * 1024 * 1024)
            for _ in range(producers)]
    for producer in pool:
        await producer.start()
    value = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"x")
    key_list = [f"trace-{i}".encode() for i in range(keys)]
    parts = list(range(partitions))
    # Partition of each key as Kafka's default partitioner would choose it.
    key_parts = [DefaultPartitioner()(k, parts, parts) for k in key_list]
    produced = 0
    try:
        # Warm-up: metadata and connections.
        for producer in pool:
            await (await producer.send(topic, value, key=b"warm"))
        start = time.perf_counter()
        stop_at = start + seconds
        pending: list[asyncio.Future[object]] = []
        while time.perf_counter() < stop_at:
            for _ in range(500):
                k = produced % keys
                p = key_parts[k]
                pending.append(await pool[p % producers].send(topic, value, key=key_list[k], partition=p))
                produced += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        produce_seconds = time.perf_counter() - start
    finally:
        for producer in pool:
            await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    consumed = 0
    try:
        total = produced + producers
        start = time.perf_counter()
        deadline = start + max(30.0, seconds * 4)
        while consumed < total and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            consumed += sum(len(records) for records in batch.values())
        consume_seconds = time.perf_counter() - start
    finally:
        await consumer.stop()
    return Ceiling(size, producers, produced, produce_seconds, consumed, consume_seconds)


def table(rows: list[Ceiling]) -> str:
    lines = [f"{'message':>9} | {'producers':>9} | {'produce msg/s':>13} | {'produce MB/s':>12} | "
             f"{'consume msg/s':>13} | {'consume MB/s':>12}", "-" * 84]
    for c in rows:
        lines.append(f"{c.size:>7} B | {c.producers:>9} | {c.produce_msgs:>13,.0f} | {c.produce_mb:>12.1f} | "
                     f"{c.consume_msgs:>13,.0f} | {c.consume_mb:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="message size in bytes (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--producers", type=int, action="append", help="producer connections (repeatable)")
    args = parser.parse_args(argv)
    sizes = args.size or [1024]
    with broker() as bootstrap:
        rows = [asyncio.run(measure_broker(bootstrap, size=s, seconds=args.seconds, producers=n))
                for s in sizes for n in (args.producers or [1, 6])]
    print("Raw broker ceiling (aiokafka, acks=all, linger 5 ms, 4 MB batches, 6 partitions, loopback):")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
