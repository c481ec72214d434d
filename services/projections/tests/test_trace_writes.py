"""The trace and observation writes on the real database: rows are inserted as if new, and only the keys already
stored are read back and merged per field, in a batch that mixes both."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from projections import SCHEMA
from projections.adapters.statements import OBS_FIELDS, TRACE_FIELDS, Statements
from projections.adapters.tables import make_tables
from projections.application.handlers import Deps
from projections.application.handlers import project as project_events
from projections.application.projections.traces import _writers
from projections.application.unit_of_work import UnitOfWork
from projections.domain.merge import to_micros, unpack_field_ts
from tally_shared.db import make_engine, make_session_factory
from tally_shared.envelope import Payload
from tally_shared.events import ObservationData, TraceData, TraceIngested
from tally_shared.records import Event

from .conftest import Harness, at


def _event(payload: Payload, pid: str, key: str, minutes: float) -> Event:
    return Event(uuid.uuid4(), type(payload), pid, key, at(minutes), payload.model_dump(exclude_unset=True))


@pytest.mark.parametrize("read_first", [False, True], ids=["insert-first", "read-first"])
async def test_a_batch_of_new_and_stored_keys_merges_only_the_stored_ones_per_field(harness: Harness,
                                                                                      read_first: bool) -> None:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    engine = make_engine(harness.database_url, pool_size=1)
    # tables of its own (copies of the migrated ones): the live ones only ever hold what the log holds
    schema = f"tw_{uuid.uuid4().hex[:10]}"
    async with engine.begin() as c:
        await c.execute(text(f"CREATE SCHEMA {schema}"))
        for t in make_tables(SCHEMA).all():
            await c.execute(text(f"CREATE TABLE {schema}.{t.name} (LIKE {SCHEMA}.{t.name} INCLUDING ALL)"))
    sql = Statements(make_tables(schema))
    deps = Deps(make_session_factory(engine), sql)

    async def project(events: list[Event], uow: UnitOfWork) -> None:
        # either way of writing (chosen by the share of stored keys in recent batches) gives the same rows
        for w in (_writers(sql).traces, _writers(sql).observations):
            w.stored_share = 1.0 if read_first else 0.0
        await project_events(events, uow)
    first = _event(TraceIngested(trace_id="t1", trace=TraceData(id="t1", name="final", tags=["b"]),
                                 observations=[ObservationData(id="o1", trace_id="t1", level="ERROR")]),
                   pid, "t1", 10)
    older = _event(TraceIngested(trace_id="t1", trace=TraceData(id="t1", name="first", user_id="u1"),
                                 observations=[ObservationData(id="o1", trace_id="t1", name="llm", level="DEFAULT"),
                                               ObservationData(id="o2", trace_id="t1", name="tool")]),
                   pid, "t1", 5)
    fresh = _event(TraceIngested(trace_id="t2", trace=TraceData(id="t2", name="other"),
                                 observations=[ObservationData(id="o3", trace_id="t2", name="chain")]),
                   pid, "t2", 7)
    try:
        async with deps.unit_of_work() as uow:
            await project([first], uow)
            await uow.commit()
        async with deps.unit_of_work() as uow:
            await project([older, fresh], uow)
            dims = dict(uow.state.changed_dims)
            await uow.commit()
        # t2 is new (its scores count under its dimensions now); t1 gained a user id, a dimension
        assert set(dims) == {(pid, "t1"), (pid, "t2")}

        async with engine.connect() as c:
            traces = {r["id"]: dict(r) for r in (await c.execute(text(
                f"SELECT * FROM {schema}.traces WHERE project_id = :p"), {"p": pid})).mappings()}  # noqa: S608
            obs = {r["id"]: dict(r) for r in (await c.execute(text(
                f"SELECT * FROM {schema}.observations WHERE project_id = :p"), {"p": pid})).mappings()}  # noqa: S608
        t1: dict[str, Any] = traces["t1"]
        assert (t1["name"], t1["user_id"], t1["tags"]) == ("final", "u1", ["b"])
        # stored packed: [ts, mask, ...]
        assert unpack_field_ts(t1["field_ts"], TRACE_FIELDS) == {"name": to_micros(at(10)), "tags": to_micros(at(10)),
                                  "user_id": to_micros(at(5))}
        assert (t1["created_at"], t1["updated_at"], t1["sort_ts"]) == (at(5), at(10), at(5))
        assert (traces["t2"]["name"], traces["t2"]["created_at"]) == ("other", at(7))
        assert (obs["o1"]["name"], obs["o1"]["level"]) == ("llm", "ERROR")
        assert unpack_field_ts(obs["o1"]["field_ts"], OBS_FIELDS) == {
            "trace_id": to_micros(at(10)), "level": to_micros(at(10)), "name": to_micros(at(5))}
        assert (obs["o2"]["name"], obs["o3"]["name"]) == ("tool", "chain")

        # a redelivery under new event ids changes nothing
        async with deps.unit_of_work() as uow:
            await project([_event(TraceIngested.model_validate(older.payload), pid, "t1", 5)], uow)
            assert (pid, "t1") not in uow.state.changed_dims
            await uow.commit()
        async with engine.connect() as c:
            sql = f"SELECT * FROM {schema}.traces WHERE project_id = :p AND id = 't1'"  # noqa: S608
            again = (await c.execute(text(sql), {"p": pid})).mappings().one()
        assert dict(again) == t1
    finally:
        async with engine.begin() as c:
            await c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await engine.dispose()
