"""Replay: rebuild every read model from the start of the topics into a shadow schema, then swap it in.

1. ``projections_rebuild`` gets empty copies of the live tables (``LIKE ... INCLUDING ALL``: same columns,
   defaults, keys and indexes as the migrated schema).
2. A consumer with every partition assigned (no group membership: nothing to join, commit or clean up) reads each
   topic from offset 0 to its end, applying batches with the same projector as the live service, into the shadow
   tables.
3. The swap takes the live writers' advisory lock (the live consumer waits at the start of its next batch), reads
   on until the shadow's processed events include every event the live tables applied, moves the live tables out
   and the shadow tables in with ``ALTER TABLE ... SET SCHEMA`` (index names restored), and commits: readers and
   the live consumer see the rebuilt tables from then on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.adapters.statements import Statements, apply_lock_key
from projections.adapters.tables import make_tables
from projections.application.handlers import CONSUMED_TOPICS, Deps, apply_batch
from tally_shared.bulk import ident
from tally_shared.db import make_session_factory
from tally_shared.envelope import PoisonMessage
from tally_shared.records import Event, decode_event

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    events_read: int
    events_applied: int
    poison_skipped: int
    seconds: float
    swap_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events_read / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class RebuildProgress:
    """Where a replay stands: events read of the total the topics held when it began."""

    read: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        if self.rate <= 0:
            return None
        return max(0.0, self.total - self.read) / self.rate

    def line(self) -> str:
        # The listed end offsets can undercount (see drain), so the total never shows below what was read.
        total = max(self.total, self.read)
        pct = 100 * self.read / total if total else 100.0
        left = self.seconds_left
        eta = f"about {left:.0f} s left" if left is not None else "time left unknown"
        return f"replaying: {self.read:,} of {total:,} events ({pct:.0f}%), {self.rate:,.0f} events/s, {eta}"


_INDEX_NAME = re.compile(r"INDEX \S+ ON \S+ ")


async def _create_shadow(conn: AsyncConnection, live: str, shadow: str) -> None:
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {ident(shadow)} CASCADE"))
    await conn.execute(text(f"CREATE SCHEMA {ident(shadow)}"))
    for table in make_tables(live).all():
        await conn.execute(text(
            f"CREATE TABLE {ident(shadow)}.{ident(table.name)} "
            f"(LIKE {ident(live)}.{ident(table.name)} INCLUDING ALL)"
        ))
        # LIKE copies no storage parameters (toast_tuple_target, fillfactor): the swapped-in tables keep them
        options = (await conn.execute(
            text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": f"{ident(live)}.{ident(table.name)}"},
        )).scalar()
        if options:
            await conn.execute(text(f"ALTER TABLE {ident(shadow)}.{ident(table.name)} SET ({', '.join(options)})"))
        # nor columns' statistics targets (the JSON payloads have none: ANALYZE would only burn CPU on them)
        targets = (await conn.execute(
            text("SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                 "AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0"),
            {"t": f"{ident(live)}.{ident(table.name)}"},
        )).all()
        if targets:
            await conn.execute(text(
                f"ALTER TABLE {ident(shadow)}.{ident(table.name)} "
                + ", ".join(f"ALTER COLUMN {ident(name)} SET STATISTICS {int(n)}" for name, n in targets)))


async def _index_defs(conn: AsyncConnection, schema: str, table: str) -> dict[str, str]:
    rows = await conn.execute(
        text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s AND tablename = :t"),
        {"s": schema, "t": table},
    )
    return {r[0]: _INDEX_NAME.sub("INDEX ON ", r[1]) for r in rows}


async def _swap(conn: AsyncConnection, live: str, shadow: str, old: str) -> None:
    await conn.execute(text(f"DROP SCHEMA IF EXISTS {ident(old)} CASCADE"))
    await conn.execute(text(f"CREATE SCHEMA {ident(old)}"))
    for table in make_tables(live).all():
        name = ident(table.name)
        before = await _index_defs(conn, live, table.name)
        await conn.execute(text(f"ALTER TABLE {ident(live)}.{name} SET SCHEMA {ident(old)}"))
        await conn.execute(text(f"ALTER TABLE {ident(shadow)}.{name} SET SCHEMA {ident(live)}"))
        after = await _index_defs(conn, live, table.name)
        wanted = {d: n for n, d in before.items()}
        for new_name, d in after.items():
            target = wanted.get(d)
            if target and target != new_name:
                await conn.execute(text(f"ALTER INDEX {ident(live)}.{ident(new_name)} RENAME TO {ident(target)}"))


async def rebuild(
    engine: AsyncEngine,
    bootstrap_servers: str,
    *,
    live_schema: str,
    batch_size: int = 5000,
    progress: Callable[[str], None] | None = None,
    swap_timeout: float = 60.0,
    on_progress: Callable[[RebuildProgress], None] | None = None,
) -> RebuildReport:
    shadow, old = f"{live_schema}_rebuild", f"{live_schema}_old"
    say = progress or log.info
    async with engine.begin() as conn:
        await _create_shadow(conn, live_schema, shadow)
    deps = Deps(sessions=make_session_factory(engine), sql=Statements(make_tables(shadow)))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=batch_size, fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    counts = {"read": 0, "applied": 0, "poison": 0}
    per_partition: dict[str, int] = {}
    total = [0]
    start = time.perf_counter()
    try:
        await consumer.topics()
        partitions = [TopicPartition(t.name, p) for t in CONSUMED_TOPICS
                      for p in sorted(consumer.partitions_for_topic(t.name) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)

        async def drain(ends: dict[TopicPartition, int], idle_ms: int) -> None:
            """Read at least up to ``ends``, then on until a poll finds nothing new. (Tansu reports the base
            offset of a partition's last record batch + 1 as its end offset, so the end offsets are a lower
            bound, not the end.)"""
            while True:
                got = await consumer.getmany(timeout_ms=idle_ms, max_records=batch_size)
                batch: list[Event] = []
                for tp, records in got.items():
                    for rec in records:
                        counts["read"] += 1
                        per_partition[f"{tp.topic}:{tp.partition}"] = rec.offset + 1
                        try:
                            batch.append(decode_event(rec.value or b"", tp.partition))
                        except PoisonMessage:
                            counts["poison"] += 1
                if batch:
                    counts["applied"] += await apply_batch(batch, deps)
                if got and on_progress is not None:
                    on_progress(RebuildProgress(counts["read"], total[0], time.perf_counter() - start))
                if not got:
                    positions = {tp: await consumer.position(tp) for tp in ends}
                    if all(positions[tp] >= end for tp, end in ends.items()):
                        return

        ends = await consumer.end_offsets(partitions)
        total[0] = sum(ends.values())
        say(f"replaying {total[0]} events from {len(partitions)} partitions into {shadow}")
        await drain(ends, idle_ms=500)
        say(f"replayed {counts['read']} events in {time.perf_counter() - start:.1f}s; swapping")
        async with engine.begin() as conn:
            # fresh tables have no statistics; readers should not plan against empty ones
            for table in make_tables(shadow).all():
                await conn.execute(text(f"ANALYZE {ident(shadow)}.{ident(table.name)}"))
        swap_start = time.perf_counter()
        live_pe = f"{ident(live_schema)}.processed_events"
        shadow_pe = f"{ident(shadow)}.processed_events"
        missing_sql = text(
            f"SELECT count(*) FROM {live_pe} l WHERE NOT EXISTS (SELECT 1 FROM {shadow_pe} s "  # noqa: S608
            f"WHERE s.consumer = l.consumer AND s.event_id = l.event_id)"
        )
        async with engine.connect() as conn:
            async with conn.begin():
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                   {"k": apply_lock_key(live_schema)})
                # The live writer is paused: the shadow must now hold every event it ever applied. Whatever it
                # fetched but has not applied yet, it applies after the swap (its ids dedupe against the shadow's).
                deadline = time.monotonic() + swap_timeout
                while True:
                    await drain(await consumer.end_offsets(partitions), idle_ms=100)
                    missing = (await conn.execute(missing_sql)).scalar_one()
                    if missing == 0:
                        break
                    if time.monotonic() > deadline:
                        # e.g. the embedded broker restarted with an empty log: swapping would lose data
                        raise RuntimeError(
                            f"the log no longer holds {missing} events the live tables applied (was the broker "
                            f"restarted?); keeping the live tables, not swapping"
                        )
                await _swap(conn, live_schema, shadow, old)
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {ident(old)} CASCADE"))
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {ident(shadow)} CASCADE"))
            await conn.commit()
        log.debug("positions reached: %s", dict(sorted(per_partition.items())))
        swap_seconds = time.perf_counter() - swap_start
    finally:
        await consumer.stop()
    report = RebuildReport(counts["read"], counts["applied"], counts["poison"], time.perf_counter() - start,
                           swap_seconds)
    say(f"rebuilt: {report.events_read} events read, {report.events_applied} applied, "
        f"{report.poison_skipped} unparseable skipped, {report.seconds:.1f}s ({report.events_per_second:.0f}/s)")
    return report
