"""A Langfuse user switching to Tally without changing code: the real langfuse 5.0.4 SDK (and, where that SDK has
no method for an endpoint Langfuse documents, plain HTTP) against the whole stack through the base URL: auth check
and project id, sessions, the v1 observations list, metrics, and trace deletion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from langfuse import Langfuse
from langfuse.experiment import LocalExperimentItem

from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually


def _batch(run: str, now: datetime) -> list[dict[str, Any]]:
    ts = now.isoformat()
    events: list[dict[str, Any]] = []
    for tid, session in ((f"a-{run}", f"s-{run}"), (f"b-{run}", f"s-{run}"), (f"c-{run}", f"s2-{run}")):
        events.append({"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": ts,
                       "body": {"id": tid, "name": f"chat-{run}", "sessionId": session, "userId": "u1",
                                "timestamp": ts}})
        events.append({"id": str(uuid.uuid4()), "type": "generation-create", "timestamp": ts,
                       "body": {"id": f"g-{tid}", "traceId": tid, "name": "llm", "model": f"model-{run}",
                                "startTime": ts, "endTime": (now + timedelta(seconds=2)).isoformat(),
                                "usageDetails": {"input": 10, "output": 5}, "costDetails": {"total": 0.25}}})
    return events


async def test_langfuse_sdk_reads_and_deletes(tally_stack: StackHandle) -> None:
    run = uuid.uuid4().hex[:8]
    a, b, c = f"a-{run}", f"b-{run}", f"c-{run}"
    session = f"s-{run}"
    lf = Langfuse(public_key=tally_stack.public_key, secret_key=tally_stack.secret_key, host=tally_stack.base_url,
                  tracing_enabled=False)
    # the first call the SDK's docs ask for, and the project id run_experiment resolves
    assert lf.auth_check() is True
    [project] = lf.api.projects.get().data
    assert project.id == tally_stack.project_id
    assert lf._get_project_id() == tally_stack.project_id

    now = datetime.now(UTC).replace(microsecond=0)
    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as api:
        r = await api.post("/api/public/ingestion", json={"batch": _batch(run, now)})
        assert r.status_code == 207 and not r.json()["errors"], r.text
        r = await api.post("/api/public/scores", json={"traceId": c, "name": f"q-{run}", "value": 1})
        assert r.status_code == 200, r.text

        async def with_score() -> bool:
            r = await api.get(f"/api/public/traces/{c}")
            return r.status_code == 200 and len(r.json()["scores"]) == 1 and len(r.json()["observations"]) == 1

        await eventually(with_score, timeout=60, what="traces, observations and score readable")

        # sessions (not in the 5.0.4 SDK; Langfuse's documented endpoints)
        async def both_traces() -> dict[str, Any] | None:
            r = await api.get(f"/api/public/sessions/{session}")
            return r.json() if r.status_code == 200 and len(r.json()["traces"]) == 2 else None

        one = await eventually(both_traces, timeout=30, what="session with both traces")
        assert one["projectId"] == tally_stack.project_id and {t["id"] for t in one["traces"]} == {a, b}
        r = await api.get("/api/public/sessions", params={"fromTimestamp": (now - timedelta(minutes=1)).isoformat(),
                                                          "limit": 100})
        assert r.status_code == 200
        assert {session, f"s2-{run}"} <= {s["id"] for s in r.json()["data"]}
        assert r.json()["meta"]["page"] == 1 and r.json()["meta"]["limit"] == 100

        # the v1 observations list
        r = await api.get("/api/public/observations", params={"traceId": a, "page": 1, "limit": 50})
        assert r.status_code == 200
        assert [o["id"] for o in r.json()["data"]] == [f"g-{a}"] and r.json()["meta"]["totalItems"] == 1

        # metrics: v2 through the SDK, v1 query and daily over HTTP
        window = {"fromTimestamp": (now - timedelta(hours=1)).isoformat(),
                  "toTimestamp": (now + timedelta(hours=1)).isoformat()}
        query = {"view": "observations", "dimensions": [{"field": "providedModelName"}],
                 "metrics": [{"measure": "count", "aggregation": "count"},
                             {"measure": "totalCost", "aggregation": "sum"}],
                 "filters": [{"column": "providedModelName", "operator": "=", "value": f"model-{run}",
                              "type": "string"}], **window}
        got = lf.api.metrics.metrics(query=orjson.dumps(query).decode())
        assert got.data == [{"providedModelName": f"model-{run}", "count_count": 3, "sum_totalCost": 0.75}]
        v1 = {"view": "traces", "metrics": [{"measure": "count", "aggregation": "count"}],
              "filters": [{"column": "name", "operator": "=", "value": f"chat-{run}", "type": "string"}], **window}
        r = await api.get("/api/public/metrics", params={"query": orjson.dumps(v1).decode()})
        assert r.json()["data"] == [{"count_count": 3}]
        r = await api.get("/api/public/metrics/daily", params={"traceName": f"chat-{run}"})
        [day] = r.json()["data"]
        assert (day["countTraces"], day["countObservations"], day["totalCost"]) == (3, 3, 0.75)
        assert day["usage"][0]["model"] == f"model-{run}" and day["usage"][0]["totalUsage"] == 45

        # deletion, one and many, through the SDK: answered at once, applied by every service
        assert lf.api.trace.delete(a).message
        assert lf.api.trace.delete_multiple(trace_ids=[c]).message

        async def deleted() -> bool:
            codes = [(await api.get(f"/api/public/traces/{t}")).status_code for t in (a, c)]
            return codes == [404, 404]

        await eventually(deleted, timeout=60, what="traces deleted from the read models")

        async def scores_gone() -> bool:
            r = await api.get("/api/public/v3/scores", params={"name": f"q-{run}"})
            return r.status_code == 200 and r.json()["data"] == []

        await eventually(scores_gone, timeout=30, what="score of the deleted trace deleted by scoring")
        assert [t["id"] for t in (await api.get(f"/api/public/sessions/{session}")).json()["traces"]] == [b]
        r = await api.get("/api/public/observations", params={"traceId": a})
        assert r.json()["data"] == []
        r = await api.get("/api/public/metrics/daily", params={"traceName": f"chat-{run}"})
        assert r.json()["data"][0]["countTraces"] == 1
        # a late score for a deleted trace is refused
        r = await api.post("/api/public/scores", json={"traceId": c, "name": f"q-{run}", "value": 1})
        assert r.status_code == 409


def test_run_experiment_resolves_the_project(tally_stack: StackHandle, caplog: pytest.LogCaptureFixture) -> None:
    # run_experiment asks /api/public/projects for the project id when tracing is on (it links the run there)
    lf = Langfuse(public_key=tally_stack.public_key, secret_key=tally_stack.secret_key, host=tally_stack.base_url)
    try:
        with caplog.at_level("WARNING", logger="langfuse"):
            result = lf.run_experiment(name=f"local-{uuid.uuid4().hex[:6]}", data=[LocalExperimentItem(input=2)],
                                       task=lambda *, item, **_: item["input"] * 2)
        assert [r.output for r in result.item_results] == [4]
        assert not [r for r in caplog.records if "project id" in r.getMessage()], caplog.text
        assert lf._project_id == tally_stack.project_id
    finally:
        lf.shutdown()
