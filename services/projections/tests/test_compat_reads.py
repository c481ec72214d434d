"""Langfuse-compatible reads added for switching users: trace deletion (with tombstones), sessions, the v1
observations list, projects and the metrics API."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text

from projections import SCHEMA
from tally_shared.db import make_engine
from tally_shared.events import (
    ItemRef,
    ObservationData,
    QueueItemAdded,
    ScoreData,
    ScoreRecorded,
    ScoreUpdated,
    TraceData,
    TraceDeleted,
    TraceIngested,
)
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


def _trace(h: Harness, pid: str, tid: str, minute: float, **fields: Any) -> Any:
    obs = fields.pop("observations", [])
    return h.env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, timestamp=at(minute), **fields),
                               observations=obs), pid, tid, at(minute))


def _score(h: Harness, pid: str, sid: str, tid: str, minute: float, value: float = 1.0,
           cls: type[ScoreRecorded] | type[ScoreUpdated] = ScoreRecorded) -> Any:
    return h.env(cls(score=ScoreData(id=sid, name="quality", data_type="NUMERIC", value=value, trace_id=tid,
                                     source="API", timestamp=at(minute))), pid, tid, at(minute))


async def test_deleted_trace_is_gone_everywhere_and_stays_gone(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    gen = ObservationData(id="dg", trace_id="dt", type="GENERATION", start_time=at(0), end_time=at(1))
    item = ItemRef(queue_id="dq", item_id="di", object_type="TRACE", object_id="dt", trace_id="dt")
    await h.send_in_order([
        _trace(h, pid, "dt", 0, name="doomed", session_id="ds", observations=[gen]),
        _trace(h, pid, "kt", 0, name="kept", session_id="ds"),
        _score(h, pid, "dsc", "dt", 1), _score(h, pid, "ksc", "kt", 1, value=3.0),
        h.env(QueueItemAdded(item=item, reason="r"), pid, "dt", at(1)),
    ])

    async def analytics() -> list[Any]:
        r = await h.http.get("/api/v1/analytics/scores", headers=auth, params={"bucket": "hour"})
        return [(s["name"], s["count"], s["mean"]) for s in r.json()["series"]]

    async def ready() -> bool:
        return await analytics() == [("quality", 2, 2.0)]

    await eventually(ready, what="both traces scored")
    await h.send(h.env(TraceDeleted(trace_id="dt"), pid, "dt", at(5)))

    async def gone() -> bool:
        return (await h.http.get("/api/public/traces/dt", headers=auth)).status_code == 404

    await eventually(gone, what="trace deleted")
    assert await analytics() == [("quality", 1, 3.0)]  # the rollup no longer counts its score
    assert (await h.http.get("/api/public/observations/dg", headers=auth)).status_code == 404
    native = (await h.http.get("/api/v1/traces", headers=auth)).json()
    assert [t["id"] for t in native["data"]] == ["kt"]
    session = (await h.http.get("/api/public/sessions/ds", headers=auth)).json()
    assert [t["id"] for t in session["traces"]] == ["kt"]

    # a deletion names a trace of its own project only: the same id deleted in another project leaves this one
    other, _ = await h.project()
    foreign = h.env(TraceDeleted(trace_id="kt"), other, "kt", at(5))
    await h.send(foreign)
    engine = make_engine(h.database_url, pool_size=1)

    async def foreign_applied() -> bool:
        async with engine.connect() as conn:
            return bool((await conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.processed_events "  # noqa: S608
                                                 "WHERE event_id = :id"), {"id": foreign.id})).scalar_one())

    try:
        await eventually(foreign_applied, what="the other project's deletion applied")
    finally:
        await engine.dispose()
    assert (await h.http.get("/api/public/traces/kt", headers=auth)).status_code == 200

    # Events about the trace that arrive after its deletion (another topic, a late SDK update) do not bring it
    # back; a marker trace sent afterwards on the same partition shows they were processed.
    await h.send_in_order([
        _trace(h, pid, "dt", 6, name="resurrected"), _score(h, pid, "late", "dt", 7),
        _score(h, pid, "dsc", "dt", 8, value=9.0, cls=ScoreUpdated),
        h.env(QueueItemAdded(item=item, reason="again"), pid, "dt", at(8)),
        _trace(h, pid, "marker", 9),
    ])

    async def marker() -> bool:
        return (await h.http.get("/api/public/traces/marker", headers=auth)).status_code == 200

    await eventually(marker, what="later events processed")
    assert (await h.http.get("/api/public/traces/dt", headers=auth)).status_code == 404
    assert await analytics() == [("quality", 1, 3.0)]
    traces = (await h.http.get("/api/public/traces", headers=auth)).json()["data"]
    assert sorted(t["id"] for t in traces) == ["kt", "marker"]


async def test_sessions_observations_projects_and_metrics(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    gens = [ObservationData(id=f"g{i}", trace_id=f"s{i}", type="GENERATION", name="llm", model="m-a" if i else "m-b",
                            start_time=at(i), end_time=at(i + 1), usage_details={"input": 10, "output": 5},
                            cost_details={"total": 0.5}) for i in range(3)]
    await h.send(
        _trace(h, pid, "s0", 0, name="chat", session_id="sess-a", user_id="u1", observations=[gens[0]],
               environment="prod"),
        _trace(h, pid, "s1", 1, name="chat", session_id="sess-a", user_id="u2", observations=[gens[1]],
               environment="prod"),
        _trace(h, pid, "s2", 60 * 24 + 2, name="other", session_id="sess-b", observations=[gens[2]]),
        _trace(h, pid, "s3", 3, name="alone"),
        _score(h, pid, "sc1", "s0", 1, value=1.0), _score(h, pid, "sc2", "s1", 2, value=0.0),
    )

    async def scored() -> bool:
        r = await h.http.get("/api/v1/analytics/scores", headers=auth, params={"bucket": "day"})
        return [s["count"] for s in r.json()["series"]] == [2] and len(
            (await h.http.get("/api/public/observations", headers=auth)).json()["data"]) == 3

    await eventually(scored, what="traces and scores applied")

    r = await h.http.get("/api/public/sessions", headers=auth, params={"limit": 1})
    body = r.json()
    assert body["meta"] == {"page": 1, "limit": 1, "totalItems": 2, "totalPages": 2}
    assert [s["id"] for s in body["data"]] == ["sess-b"]  # newest first
    r = await h.http.get("/api/public/sessions", headers=auth,
                         params={"toTimestamp": at(10).isoformat(), "environment": "prod"})
    assert [(s["id"], s["environment"], s["projectId"]) for s in r.json()["data"]] == [("sess-a", "prod", pid)]
    one = (await h.http.get("/api/public/sessions/sess-a", headers=auth)).json()
    assert one["createdAt"].startswith("2026-03-02T09:00:00") and [t["id"] for t in one["traces"]] == ["s0", "s1"]
    assert (await h.http.get("/api/public/sessions/nope", headers=auth)).status_code == 404
    native = (await h.http.get("/api/v1/sessions", headers=auth)).json()
    assert [(s["id"], s["trace_count"], s["user_count"]) for s in native["data"]] == [("sess-b", 1, 0),
                                                                                     ("sess-a", 2, 2)]

    r = await h.http.get("/api/public/observations", headers=auth, params={"traceId": "s1", "page": 1, "limit": 50})
    [o] = r.json()["data"]
    assert o["id"] == "g1" and o["type"] == "GENERATION" and r.json()["meta"]["totalItems"] == 1
    r = await h.http.get("/api/public/observations", headers=auth, params={"userId": "u1"})
    assert [o["id"] for o in r.json()["data"]] == ["g0"]
    r = await h.http.get("/api/public/observations", headers=auth, params={"limit": 2, "page": 2})
    assert [o["id"] for o in r.json()["data"]] == ["g0"] and r.json()["meta"]["totalPages"] == 2

    [project] = (await h.http.get("/api/public/projects", headers=auth)).json()["data"]
    assert project["id"] == pid and project["metadata"] == {} and project["organization"]["id"]

    daily = (await h.http.get("/api/public/metrics/daily", headers=auth)).json()
    assert [(d["date"], d["countTraces"], d["countObservations"]) for d in daily["data"]] == [
        ("2026-03-03", 1, 1), ("2026-03-02", 3, 2)]
    assert daily["data"][1]["totalCost"] == 1.0
    assert daily["data"][1]["usage"] == [{"model": "m-a", "inputUsage": 10, "outputUsage": 5, "totalUsage": 15,
                                          "countTraces": 1, "countObservations": 1, "totalCost": 0.5},
                                         {"model": "m-b", "inputUsage": 10, "outputUsage": 5, "totalUsage": 15,
                                          "countTraces": 1, "countObservations": 1, "totalCost": 0.5}]
    daily = (await h.http.get("/api/public/metrics/daily", headers=auth, params={"traceName": "other"})).json()
    assert [d["date"] for d in daily["data"]] == ["2026-03-03"]

    async def metric(query: dict[str, Any], path: str = "/api/public/v2/metrics") -> Any:
        window = {"fromTimestamp": at(-60).isoformat(), "toTimestamp": at(60 * 48).isoformat()}
        return await h.http.get(path, headers=auth, params={"query": orjson.dumps(window | query).decode()})

    r = await metric({"view": "observations", "dimensions": [{"field": "providedModelName"}],
                      "metrics": [{"measure": "totalCost", "aggregation": "sum"},
                                  {"measure": "count", "aggregation": "count"},
                                  {"measure": "latency", "aggregation": "p50"}],
                      "orderBy": [{"field": "providedModelName", "direction": "asc"}]})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [
        {"providedModelName": "m-a", "sum_totalCost": 1.0, "count_count": 2, "p50_latency": 60000.0},
        {"providedModelName": "m-b", "sum_totalCost": 0.5, "count_count": 1, "p50_latency": 60000.0}]
    r = await metric({"view": "observations", "metrics": [{"measure": "count", "aggregation": "count"}],
                      "timeDimension": {"granularity": "day"},
                      "filters": [{"column": "traceName", "operator": "=", "value": "chat", "type": "string"}]})
    assert r.json()["data"] == [{"time_dimension": "2026-03-02T00:00:00Z", "count_count": 2}]
    r = await metric({"view": "scores-numeric", "dimensions": [{"field": "name"}],
                      "metrics": [{"measure": "value", "aggregation": "avg"}]})
    assert r.json()["data"] == [{"name": "quality", "avg_value": 0.5}]
    r = await metric({"view": "traces", "dimensions": [{"field": "name"}],
                      "metrics": [{"measure": "count", "aggregation": "count"},
                                  {"measure": "uniqueUserIds", "aggregation": "count"}],
                      "filters": [{"column": "sessionId", "operator": "any of", "value": ["sess-a", "sess-b"],
                                   "type": "stringOptions"}]}, "/api/public/metrics")
    assert r.json()["data"] == [{"name": "chat", "count_count": 2, "count_uniqueUserIds": 2},
                                {"name": "other", "count_count": 1, "count_uniqueUserIds": 0}]

    # whitelists: unknown views, dimensions, measures, aggregations and filter columns are 400 naming the field
    bad = [
        ({"view": "traces", "metrics": [{"measure": "count", "aggregation": "count"}]}, "query.view"),
        ({"view": "observations", "metrics": [{"measure": "count", "aggregation": "count"}],
          "dimensions": [{"field": "name; DROP TABLE x"}]}, "query.dimensions[0].field"),
        ({"view": "observations", "metrics": [{"measure": "count", "aggregation": "count"}],
          "dimensions": [{"field": "traceId"}]}, "query.dimensions[0].field"),
        ({"view": "observations", "metrics": [{"measure": "bogus", "aggregation": "sum"}]},
         "query.metrics[0].measure"),
        ({"view": "observations", "metrics": [{"measure": "count", "aggregation": "median"}]},
         "query.metrics[0].aggregation"),
        ({"view": "observations", "metrics": [{"measure": "count", "aggregation": "count"}],
          "filters": [{"column": "x", "operator": "=", "value": "y"}]}, "query.filters[0].column"),
    ]
    for query, where in bad:
        r = await metric(query)
        assert r.status_code == 400, query
        assert r.json()["error"]["details"][0]["field"] == where, r.text
    r = await h.http.get("/api/public/v2/metrics", headers=auth, params={"query": "{not json"})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "query"
