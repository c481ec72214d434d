"""Replay: rebuilding every read model from the start of the topics gives exactly the live tables, the swap
keeps index names, and the live service goes on applying events into the swapped-in tables."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from projections import SCHEMA
from projections.adapters.rebuild import rebuild
from projections.adapters.tables import make_tables
from tally_shared.db import make_engine
from tally_shared.events import (
    ItemRef,
    ObservationData,
    QueueCreated,
    QueueData,
    QueueItemAdded,
    QueueItemCompleted,
    ScoreData,
    ScoreDeleted,
    ScoreRecorded,
    ScoreUpdated,
    TraceData,
    TraceDeleted,
    TraceIngested,
)
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


async def snapshot(engine: Any, project: str | None = None, event_ids: list[uuid.UUID] | None = None
                   ) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row (of ``project``, and the claims of ``event_ids``, when given). Other tests of the
    session publish to the same broker (some with made-up keys no producer would use), and the live consumer owes
    nothing to them at the moment of the snapshot, so their rows are left out of the comparison."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in make_tables(SCHEMA).all():
            cols = [c for c in table.c if c.name != "processed_at"]
            pk = list(table.primary_key.columns)
            stmt = select(*cols).order_by(*pk)
            if project is not None and "project_id" in table.c:
                stmt = stmt.where(table.c.project_id == project)
            elif event_ids is not None and "event_id" in table.c:
                stmt = stmt.where(table.c.event_id.in_(event_ids))
            out[table.name] = [tuple(r) for r in await conn.execute(stmt)]
    return out


async def index_names(engine: Any) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = :s ORDER BY 1, 2"), {"s": SCHEMA})]


async def test_rebuild_equals_live(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    item = ItemRef(queue_id="rq", item_id="ri", object_type="TRACE", object_id="rt", trace_id="rt")
    envs = [
        h.env(TraceIngested(trace_id="rt", trace=TraceData(id="rt", name="late-name", tags=["x"]),
                            observations=[ObservationData(id="ro", trace_id="rt", level="ERROR")]), pid, "rt", at(9)),
        h.env(TraceIngested(trace_id="rt", trace=TraceData(id="rt", name="early", user_id="u", timestamp=at(0)),
                            observations=[ObservationData(id="ro", trace_id="rt", name="gen", start_time=at(0))]),
              pid, "rt", at(1)),
        h.env(ScoreRecorded(score=ScoreData(id="rs", name="q", data_type="NUMERIC", value=0.3333, trace_id="rt",
                                            source="EVAL", timestamp=at(2))), pid, "rt", at(2)),
        h.env(ScoreUpdated(score=ScoreData(id="rs", name="q", data_type="NUMERIC", value=0.1, trace_id="rt",
                                           source="EVAL", timestamp=at(2))), pid, "rt", at(3)),
        h.env(ScoreRecorded(score=ScoreData(id="rs2", name="q", data_type="NUMERIC", value=0.7, trace_id="rt",
                                            source="EVAL", timestamp=at(4))), pid, "rt", at(4)),
        h.env(ScoreDeleted(score_id="rs2", trace_id="rt"), pid, "rt", at(5)),
        h.env(QueueItemAdded(item=item, reason="r"), pid, "rt", at(6)),
        h.env(QueueItemCompleted(item=item, reviewer="ann", item_completed=True), pid, "rt", at(7)),
        h.env(QueueCreated(queue=QueueData(id="rq", name="Rebuild")), pid, "rq", at(0)),
        # a deleted trace, and a score for it that arrives after the deletion: neither comes back on a rebuild
        h.env(TraceIngested(trace_id="rdel", trace=TraceData(id="rdel", name="gone")), pid, "rdel", at(1)),
        h.env(ScoreRecorded(score=ScoreData(id="rds", name="q", data_type="NUMERIC", value=1, trace_id="rdel",
                                            source="EVAL", timestamp=at(2))), pid, "rdel", at(2)),
        h.env(TraceDeleted(trace_id="rdel"), pid, "rdel", at(3)),
        h.env(ScoreRecorded(score=ScoreData(id="rds2", name="q", data_type="NUMERIC", value=1, trace_id="rdel",
                                            source="EVAL", timestamp=at(4))), pid, "rdel", at(4)),
    ]
    await h.send_in_order(envs)
    await h.send(envs[0], envs[3])  # redeliveries

    engine = make_engine(h.database_url, pool_size=2)
    ids = [e.id for e in envs]

    async def caught_up() -> bool:
        # (the broker's end offsets are not exact on Tansu, so wait for the events themselves, not for lag 0)
        async with engine.connect() as conn:
            n = (await conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.processed_events "  # noqa: S608
                                         "WHERE event_id = ANY(:ids)"), {"ids": ids})).scalar_one()
        return n == len(ids)

    try:
        await eventually(caught_up, timeout=60, what="live consumer caught up")
        live = await snapshot(engine, pid, ids)
        assert any(r[0] == pid for r in live["traces"]) and live["score_rollup"]
        assert not [r for r in live["traces"] if r[:2] == (pid, "rdel")]
        assert [r[:2] for r in live["deleted_traces"] if r[0] == pid] == [(pid, "rdel")]
        assert not [r for r in live["scores"] if r[0] == pid and r[1] in ("rds", "rds2")]
        indexes = await index_names(engine)
        report = await rebuild(engine, h.bootstrap, live_schema=SCHEMA, batch_size=1000)
        assert report.events_read >= len(envs) + 2 and report.events_applied < report.events_read  # duplicates
        rebuilt = await snapshot(engine, pid, ids)
        for name in live:
            assert rebuilt[name] == live[name], f"table {name} differs after rebuild"
        assert await index_names(engine) == indexes
        async with engine.connect() as conn:
            schemas = {r[0] for r in await conn.execute(text("SELECT nspname FROM pg_namespace"))}
        assert f"{SCHEMA}_rebuild" not in schemas and f"{SCHEMA}_old" not in schemas
    finally:
        await engine.dispose()

    # the live service reads and writes the swapped-in tables
    await h.send(h.env(TraceIngested(trace_id="rt", trace=TraceData(id="rt", name="after-swap")), pid, "rt", at(20)))

    async def renamed() -> bool:
        r = await h.http.get("/api/public/traces/rt", headers=auth)
        return r.status_code == 200 and r.json()["name"] == "after-swap"

    await eventually(renamed, what="live apply after swap")


async def test_rebuild_refuses_to_swap_when_the_log_lost_events(harness: Harness) -> None:
    """An embedded broker keeps its log in memory: after a restart the log lacks what the tables hold, and a
    rebuild must keep the live tables rather than swap in an emptier copy."""
    h = harness
    engine = make_engine(h.database_url, pool_size=2)
    ghost = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"INSERT INTO {SCHEMA}.processed_events (consumer, event_id) "  # noqa: S608
                                    "VALUES ('projections', :id)"), {"id": ghost})
        before = await snapshot(engine)
        with pytest.raises(RuntimeError, match="no longer holds 1 events"):
            await rebuild(engine, h.bootstrap, live_schema=SCHEMA, batch_size=1000, swap_timeout=1.0)
        assert await snapshot(engine) == before
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {SCHEMA}.processed_events WHERE event_id = :id"),  # noqa: S608
                               {"id": ghost})
        await engine.dispose()


async def test_shadow_tables_keep_the_storage_parameters_of_the_live_ones(harness: Harness) -> None:
    from projections.adapters.rebuild import _create_shadow

    engine = make_engine(harness.database_url, pool_size=1)
    shadow = f"shadow_{uuid.uuid4().hex[:8]}"

    async def options(schema: str) -> list[str] | None:
        async with engine.connect() as c:
            return (await c.execute(text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                    {"t": f'"{schema}".observations'})).scalar()

    before = await options(SCHEMA)
    try:
        async with engine.begin() as c:
            await c.execute(text(f'ALTER TABLE "{SCHEMA}".observations SET (toast_tuple_target = 4000)'))
            await _create_shadow(c, SCHEMA, shadow)
        assert await options(shadow) == ["toast_tuple_target=4000"]
        async with engine.connect() as c:
            # and the columns' statistics targets (migration 0010: none for the JSON payloads)
            targets = {s: dict((await c.execute(text(
                "SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                "AND attname IN ('input', 'output', 'field_ts', 'name')"), {"t": f'"{s}".observations'})).all())
                for s in (SCHEMA, shadow)}
        assert targets[SCHEMA]["input"] == targets[SCHEMA]["field_ts"] == 0
        assert targets[shadow] == targets[SCHEMA]
    finally:
        async with engine.begin() as c:
            await c.execute(text(f'DROP SCHEMA IF EXISTS "{shadow}" CASCADE'))
            await c.execute(text(f'ALTER TABLE "{SCHEMA}".observations RESET (toast_tuple_target)'))
            if before:
                await c.execute(text(f'ALTER TABLE "{SCHEMA}".observations SET ({", ".join(before)})'))
        await engine.dispose()
