"""Event handling: one batch of events from any topic -> one unit of work over every read model.

Each event goes to the projection that handles its class (``projections.PROJECTION_OF``); events no read model
needs (dataset items, say) are claimed and otherwise ignored."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.statements import Statements
from projections.application.projections import DELETIONS, PROJECTION_OF, PROJECTIONS
from projections.application.projections.base import Projection, no_traces
from projections.application.projections.deletions import tombstoned
from projections.application.unit_of_work import UnitOfWork
from tally_shared.events import DatasetRunItemCreated
from tally_shared.producer import partition
from tally_shared.records import Event
from tally_shared.topics import DATASETS, QUEUES, SCORE_CONFIGS, SCORES, TRACES, Topic

# Score commands are not validated yet (scoring turns them into ScoreRecorded); dead letters are not events.
CONSUMED_TOPICS: tuple[Topic, ...] = (TRACES, SCORES, SCORE_CONFIGS, QUEUES, DATASETS)
UNPROJECTED = "none"

APPLY_SECONDS = Histogram(
    "tally_projections_batch_apply_seconds", "Time to apply one batch of events (one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_APPLIED = Counter("tally_projections_events_applied_total", "Events applied to the read models",
                         ["model"])
DUPLICATES = Counter("tally_projections_duplicates_total", "Redelivered events that changed nothing")
READ_MODEL_DELAY = Histogram(
    "tally_projections_read_model_delay_seconds",
    "Delay from an event's occurred_at to the commit of its read-model rows", ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def observe_many(histogram: Any, amounts: Iterable[float]) -> None:
    """``histogram.observe`` for each amount, with one increment per bucket (and one of the sum) instead of one
    locked increment per amount: a batch's delays are thousands of observations."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for a in amounts:
            histogram.observe(a)
        return
    counts = [0] * len(bounds)
    s = 0.0
    last = len(bounds) - 1
    for a in amounts:
        s += a
        counts[min(bisect_left(bounds, a), last)] += 1
    total.inc(s)
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)


@dataclass
class Deps:
    sessions: async_sessionmaker[AsyncSession]
    sql: Statements

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.sql)


async def project(events: Sequence[Event], uow: UnitOfWork) -> tuple[dict[Projection, list[Event]], int]:
    """Apply the events not applied before, inside ``uow`` (no commit); returns them by projection, and how many
    were new (those no read model needs included)."""
    # by their integers: a UUID's own hash is a Python-level call, an int's is not
    fresh = {u.int for u in await uow.claim([e.id for e in events])}
    routed: dict[Projection, list[Event]] = defaultdict(list)
    unprojected: list[Event] = []
    for e in events:
        n = e.id.int
        if n in fresh:
            fresh.discard(n)  # a duplicate within the batch counts once
            p = PROJECTION_OF.get(e.cls)
            if p is None:
                unprojected.append(e)
            else:
                routed[p].append(e)
    n_fresh = len(unprojected) + sum(len(v) for v in routed.values())
    if not routed:
        return {}, n_fresh
    await uow.lock_trace_slots(trace_slots(routed))
    uow.state.gone = await tombstoned(uow, routed.get(DELETIONS, []),
                                      ((p, evs) for p, evs in routed.items() if p is not DELETIONS))
    for p in PROJECTIONS:
        evs = routed.get(p)
        if evs or p.always:
            await p.apply(evs or [], uow)
    return routed, n_fresh


# Events whose writes are not their own partition's: a dataset run item (tally.datasets, 3 partitions) merges into
# its trace's row, which the trace's partition of tally.traces (6) writes too. A batch holding one is applied whole
# (and its transaction holds the trace's slot, so a replica writing that trace waits for it).
_ACROSS_PARTITIONS: frozenset[type[Any]] = frozenset({DatasetRunItemCreated})


def trace_slots(routed: dict[Projection, list[Event]]) -> set[int]:
    """The trace slots (``UnitOfWork.lock_trace_slots``) of the traces these events are about. Events about a trace
    are keyed by its id, so on a topic partitioned like ``tally.traces`` an event's partition is its trace's slot;
    a dataset run item (``tally.datasets`` is partitioned differently) has its trace's slot computed."""
    slots: set[int] = set()
    for p, evs in routed.items():
        if p.traces_of is no_traces:
            continue
        for e in evs:
            if e.cls in _ACROSS_PARTITIONS:
                slots.update(trace_slot(tid) for tid in p.traces_of(e) if tid)
            else:
                slots.add(e.partition)
    return slots


_TRACE_PARTITIONS = tuple(range(TRACES.partitions))


def trace_slot(trace_id: str) -> int:
    """The partition of ``tally.traces`` the producers' partitioner gives the trace's events."""
    return partition(trace_id.encode(), _TRACE_PARTITIONS, _TRACE_PARTITIONS)


async def apply_by_partition(events: Sequence[Event], deps: Deps, *, concurrency: int = 2) -> int:
    """``apply_batch`` per partition, up to ``concurrency`` partitions at a time, each in its own transaction.

    What a partition's events write is that partition's own (its traces, their scores and queue items, the rollup
    rows of its shard), as it is between replicas, which each own some partitions; so the transactions of two
    partitions do not wait for each other, PostgreSQL works on both at once, and this process prepares one while
    the other's statements run. Each transaction claims its own events: when one fails after another committed,
    the batch comes again and the committed part is skipped as already applied. Returns how many were new."""
    if concurrency <= 1 or any(e.cls in _ACROSS_PARTITIONS for e in events):
        return await apply_batch(events, deps)
    groups: dict[int, list[Event]] = {}
    for e in events:
        g = groups.get(e.partition)
        if g is None:
            g = groups[e.partition] = []
        g.append(e)
    if len(groups) <= 1:
        return await apply_batch(events, deps)
    gate = asyncio.Semaphore(concurrency)

    async def one(evs: list[Event]) -> int:
        async with gate:
            return await apply_batch(evs, deps)

    # every transaction ends (commits or rolls back) before this returns or raises: a retry of the batch must not
    # run beside a transaction of its first attempt
    results = await asyncio.gather(*(one(g) for g in groups.values()), return_exceptions=True)
    applied = 0
    for r in results:
        if isinstance(r, BaseException):
            raise r
        applied += r
    return applied


async def apply_batch(events: Sequence[Event], deps: Deps) -> int:
    """One batch in one transaction; returns how many events were new."""
    if not events:
        return 0
    start = time.perf_counter()
    async with deps.unit_of_work() as uow:
        routed, applied = await project(events, uow)
        await uow.commit()
    APPLY_SECONDS.observe(time.perf_counter() - start)
    if applied < len(events):
        DUPLICATES.inc(len(events) - applied)
    now = datetime.now(UTC)
    for p, evs in routed.items():
        observe_many(READ_MODEL_DELAY.labels(p.model), [max(0.0, (now - e.occurred_at).total_seconds()) for e in evs])
        EVENTS_APPLIED.labels(p.model).inc(len(evs))
    return applied
