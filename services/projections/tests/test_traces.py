"""Trace view: per-field merging of out-of-order partial updates, duplicates, scores before their trace, and the
Langfuse-compatible reads (checked with the real langfuse SDK where it has the call)."""

from __future__ import annotations

from typing import Any

import httpx
from langfuse.api.client import AsyncLangfuseAPI

from tally_shared.events import (
    ObservationData,
    ScoreData,
    ScoreDataType,
    ScoreRecorded,
    ScoreSource,
    TraceData,
    TraceIngested,
)
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


async def _get(h: Harness, auth: dict[str, str], path: str, **params: Any) -> httpx.Response:
    return await h.http.get(path, headers=auth, params=params)


async def test_out_of_order_partial_updates_merge_per_field_and_duplicates_change_nothing(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    tid = "trace-ooo"
    newer = h.env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="final-name", tags=["b"]),
                                observations=[ObservationData(id="o1", trace_id=tid, level="ERROR",
                                                              end_time=at(2))]), pid, tid, at(10))
    older = h.env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="first-name", user_id="u1",
                                                              timestamp=at(0), input={"q": "hi"}),
                                observations=[ObservationData(id="o1", trace_id=tid, name="llm", type="GENERATION",
                                                              start_time=at(0), end_time=at(1), level="DEFAULT",
                                                              cost_details={"total": 0.5},
                                                              usage_details={"input": 10, "output": 5})]),
                  pid, tid, at(5))
    # the newer update arrives first, then the older one, then the newer one again (a redelivery)
    await h.send_in_order([newer, older, newer])

    async def merged() -> dict[str, Any] | None:
        r = await _get(h, auth, f"/api/public/traces/{tid}")
        if r.status_code != 200:
            return None
        body = r.json()
        return body if body["observations"] and body["observations"][0]["name"] == "llm" else None

    body = await eventually(merged, what="merged trace")
    assert body["name"] == "final-name"  # the later occurred_at wins, whatever the arrival order
    assert body["userId"] == "u1" and body["input"] == {"q": "hi"} and body["tags"] == ["b"]
    obs = body["observations"]
    assert len(obs) == 1
    assert obs[0]["level"] == "ERROR" and obs[0]["type"] == "GENERATION"
    assert obs[0]["endTime"].startswith("2026-03-02T09:02:00")
    assert body["latency"] == 120.0 and body["totalCost"] == 0.5
    assert body["htmlPath"] == f"/project/{pid}/traces/{tid}"

    # another project sees nothing of it
    _, other = await h.project()
    assert (await _get(h, other, f"/api/public/traces/{tid}")).status_code == 404
    assert (await _get(h, {}, f"/api/public/traces/{tid}")).status_code == 401


async def test_score_before_its_trace_joins_later(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    tid = "trace-late"
    score = h.env(ScoreRecorded(score=ScoreData(
        id="s-early", name="helpfulness", data_type="NUMERIC", value=4, trace_id=tid, source="ANNOTATION",
        author_user_id="alice", comment="good", config_id="cfg-1", config_version=2, timestamp=at(1))),
        pid, tid, at(1))
    trace = h.env(TraceIngested(trace_id=tid, trace=TraceData(id=tid, name="chat", environment="prod",
                                                              timestamp=at(0))), pid, tid, at(0))
    await h.send(score)
    await h.send(trace)

    async def with_score() -> dict[str, Any] | None:
        r = await _get(h, auth, f"/api/v1/traces/{tid}")
        return r.json() if r.status_code == 200 and r.json()["scores"] else None

    view = await eventually(with_score, what="trace with score")
    s = view["scores"][0]
    assert (s["author_user_id"], s["source"], s["config_version"], s["comment"], s["kind"]) == (
        "alice", "ANNOTATION", 2, "good", "human")
    # the score is counted under its trace's name once the trace arrived (rollup re-counted)
    r = await _get(h, auth, "/api/v1/analytics/scores", trace_name="chat", bucket="hour")
    series = r.json()["series"]
    assert [(x["name"], x["count"], x["mean"]) for x in series] == [("helpfulness", 1, 4.0)]
    r = await _get(h, auth, "/api/v1/analytics/scores", trace_name="other", bucket="hour")
    assert r.json()["series"] == []


async def test_public_trace_list_filters_and_pages(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    envs = []
    for i in range(5):
        tid = f"t{i}"
        envs.append(h.env(TraceIngested(trace_id=tid, trace=TraceData(
            id=tid, name="even" if i % 2 == 0 else "odd", timestamp=at(i), user_id=f"u{i % 2}",
            tags=["x", f"n{i}"], environment="prod" if i < 3 else "dev", release="r1")), pid, tid, at(i)))
    await h.send(*envs)

    async def all_there() -> bool:
        r = await _get(h, auth, "/api/public/traces")
        return r.json()["meta"]["totalItems"] == 5

    await eventually(all_there, what="5 traces")
    r = await _get(h, auth, "/api/public/traces", limit=2, page=2)
    body = r.json()
    assert body["meta"] == {"page": 2, "limit": 2, "totalItems": 5, "totalPages": 3}
    assert [d["id"] for d in body["data"]] == ["t2", "t1"]  # newest first by default
    r = await _get(h, auth, "/api/public/traces", name="even", orderBy="timestamp.asc")
    assert [d["id"] for d in r.json()["data"]] == ["t0", "t2", "t4"]
    r = await h.http.get("/api/public/traces", headers=auth, params=[("tags", "x"), ("tags", "n3")])
    assert [d["id"] for d in r.json()["data"]] == ["t3"]
    r = await h.http.get("/api/public/traces", headers=auth, params=[("environment", "dev"), ("userId", "u0")])
    assert [d["id"] for d in r.json()["data"]] == ["t4"]
    r = await _get(h, auth, "/api/public/traces", fromTimestamp=at(1).isoformat(), toTimestamp=at(3).isoformat())
    assert sorted(d["id"] for d in r.json()["data"]) == ["t1", "t2"]
    r = await _get(h, auth, "/api/public/traces", orderBy="bogus")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await _get(h, auth, "/api/v1/traces", name="odd")
    assert [d["id"] for d in r.json()["data"]] == ["t3", "t1"]


async def test_v2_observations_with_the_langfuse_sdk(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    obs = [ObservationData(id=f"o{i}", trace_id="tr", name="step", type="SPAN" if i else "GENERATION",
                           start_time=at(i), end_time=at(i + 0.5), parent_observation_id=None if i == 0 else "o0",
                           level="ERROR" if i == 3 else "DEFAULT", usage_details={"input": 3, "output": 4},
                           cost_details={"total": 0.1}) for i in range(7)]
    obs[0].prompt_name, obs[0].prompt_version = "qa-prompt", 4
    await h.send(h.env(TraceIngested(trace_id="tr", trace=TraceData(id="tr", name="agent", user_id="u9"),
                                     observations=obs), pid, "tr", at(0)))
    public, secret = auth["Authorization"], None
    del public, secret

    async def seven() -> bool:
        r = await _get(h, auth, "/api/public/v2/observations", traceId="tr", limit=100)
        return len(r.json()["data"]) == 7

    await eventually(seven, what="observations")
    transport = h.http._transport  # the ASGI transport onto the running app
    from base64 import b64decode

    pk, sk = b64decode(auth["Authorization"].split()[1]).decode().split(":")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
        api = AsyncLangfuseAPI(base_url="http://t", username=pk, password=sk, httpx_client=raw)
        seen: list[str] = []
        cursor = None
        while True:
            page = await api.observations.get_many(limit=3, cursor=cursor, fields="core,basic,usage,trace_context")
            seen += [o.id for o in page.data]
            cursor = page.meta.cursor
            if not cursor:
                break
        assert seen == [f"o{i}" for i in range(6, -1, -1)]  # newest first, each once
        first = (await api.observations.get_many(trace_id="tr", level="ERROR")).data
        assert [o.id for o in first] == ["o3"]
        roots = (await api.observations.get_many(is_root_observation=True, fields="core,basic,usage")).data
        assert [(o.id, o.type, o.total_cost, o.usage_details) for o in roots] == [
            ("o0", "GENERATION", 0.1, {"input": 3, "output": 4})]
        assert roots[0].user_id == "u9" and roots[0].is_root_observation is True
        prompted = (await api.observations.get_many(is_root_observation=True, fields="core,prompt")).data
        assert [(o.prompt_name, o.prompt_version) for o in prompted] == [("qa-prompt", 4)]
        filtered = (await api.observations.get_many(
            filter='[{"type":"string","column":"type","operator":"=","value":"GENERATION"}]')).data
        assert [o.id for o in filtered] == ["o0"]
    r = await _get(h, auth, "/api/public/observations/o3")
    assert r.json()["level"] == "ERROR" and r.json()["parentObservationId"] == "o0"
    r = await _get(h, auth, "/api/public/observations/o0")
    assert (r.json()["promptName"], r.json()["promptVersion"]) == ("qa-prompt", 4)
    r = await _get(h, auth, "/api/public/v2/observations", cursor="not-a-cursor")
    assert r.status_code == 400


async def test_an_event_that_cannot_fit_is_skipped_not_retried_forever(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    long_id = "x" * 300
    # built without validation: whether decoding rejects it (dead letter) or the projector skips it, the read
    # model must go on with the next events
    bad = h.env(ScoreRecorded.model_construct(score=ScoreData.model_construct(
        id=long_id, name="n", data_type=ScoreDataType.NUMERIC, value=1.0, trace_id="tf", source=ScoreSource.API,
        timestamp=at(0))), pid, "tf", at(0))
    good = h.env(ScoreRecorded(score=ScoreData(id="fine", name="n", data_type="NUMERIC", value=2, trace_id="tf",
                                               source="API", timestamp=at(0))), pid, "tf", at(0))
    await h.send(bad, good)
    await h.send(h.env(TraceIngested(trace_id="tf", trace=TraceData(id="tf", name="fits")), pid, "tf", at(0)))

    async def only_good() -> list[str] | None:
        r = await _get(h, auth, "/api/public/traces/tf")
        ids = [s["id"] for s in r.json()["scores"]] if r.status_code == 200 else []
        return ids or None

    assert await eventually(only_good, what="the fitting score") == ["fine"]
