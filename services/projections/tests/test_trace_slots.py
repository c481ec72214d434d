"""Trace slots: a transaction that reads and writes what belongs to a trace holds the trace's slot, so two
transactions about one trace (a trace event and a run item on another topic, or a score applied by another
replica) never interleave; transactions about other traces' slots do not wait."""

from __future__ import annotations

import asyncio
import uuid

from projections import SCHEMA
from projections.adapters.statements import Statements
from projections.adapters.tables import make_tables
from projections.application.handlers import Deps, trace_slot, trace_slots
from projections.application.projections import PROJECTION_OF
from projections.application.projections.base import Projection
from tally_shared.db import make_engine, make_session_factory
from tally_shared.envelope import Payload
from tally_shared.events import DatasetCreated, DatasetData, DatasetRunItemCreated, DatasetRunItemData, TraceIngested
from tally_shared.producer import partition
from tally_shared.records import Event
from tally_shared.topics import QUEUES, SCORES, TRACES

from .conftest import Harness, at


def test_topics_about_traces_are_partitioned_alike() -> None:
    # an event's partition is its trace's slot only while these agree
    assert TRACES.partitions == SCORES.partitions == QUEUES.partitions


def _event(payload: Payload, key: str, part: int) -> Event:
    return Event(uuid.uuid4(), type(payload), "p", key, at(1), payload.model_dump(exclude_unset=True), part)


def test_a_run_item_takes_its_traces_slot_and_other_events_their_partition() -> None:
    tid = "trace-é-☃-" + uuid.uuid4().hex
    item = _event(DatasetRunItemCreated(run_item=DatasetRunItemData(
        id="ri", run_id="r", run_name="run", dataset_id="d", dataset_name="ds", dataset_item_id="i", trace_id=tid,
        created_at=at(1))), tid, 2)
    trace = _event(TraceIngested(trace_id="other"), "other", 4)
    dataset = _event(DatasetCreated(dataset=DatasetData(id="d", name="ds", created_at=at(1), updated_at=at(1))),
                     "d", 1)
    routed: dict[Projection, list[Event]] = {}
    for e in (item, trace, dataset):
        routed.setdefault(PROJECTION_OF[e.cls], []).append(e)
    # the producer's own partitioner is what put the trace's events on their partition
    expected = partition(tid.encode(), list(range(TRACES.partitions)), [])
    assert trace_slot(tid) == expected
    assert trace_slots(routed) == {expected, 4}  # a dataset is about no trace


async def test_a_slot_is_held_until_the_end_of_the_transaction_and_others_do_not_wait(harness: Harness) -> None:
    engine = make_engine(harness.database_url, pool_size=3)
    deps = Deps(make_session_factory(engine), Statements(make_tables(SCHEMA)))
    try:
        release = asyncio.Event()
        held = asyncio.Event()

        async def first() -> None:
            async with deps.unit_of_work() as uow:
                await uow.lock_trace_slots([5, 3])
                held.set()
                await release.wait()
                await uow.commit()

        async def take(slots: list[int]) -> None:
            async with deps.unit_of_work() as uow:
                await uow.lock_trace_slots(slots)
                await uow.commit()

        holder = asyncio.create_task(first())
        await held.wait()
        await asyncio.wait_for(take([0, 4]), 5)  # other slots: no wait
        blocked = asyncio.create_task(take([3]))
        await asyncio.sleep(0.5)
        assert not blocked.done()
        release.set()
        await asyncio.wait_for(holder, 5)
        await asyncio.wait_for(blocked, 5)
    finally:
        await engine.dispose()
