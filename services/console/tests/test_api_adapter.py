"""The HTTP adapter against a fake of the services' HTTP answers, built from the services' own contract models
(``tally_shared.contracts``, what the routers validate their answers with): paths, the bearer token and project
header, and normalisation into the pages' shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from console.adapters.api import HttpApiFactory
from console.adapters.port import ApiCallError, TraceQuery
from tally_shared.contracts import dead_letters as dl
from tally_shared.contracts import queues as qr
from tally_shared.contracts import read_models as rm
from tally_shared.identity.auth import read_user_token

SECRET = "s3cret"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def wire(model: BaseModel) -> Any:
    """A contract model as its service writes it."""
    return model.model_dump(mode="json", by_alias=True)


def trace_native(**fields: Any) -> rm.TraceNative:
    return rm.TraceNative.model_validate(
        {"id": "t", "name": None, "timestamp": NOW, "input": None, "output": None, "metadata": None, "tags": [],
         "user_id": None, "session_id": None, "release": None, "version": None, "environment": "default",
         "public": False, "dataset_run_name": None, "dataset_item_id": None, "dataset_name": None,
         "created_at": NOW, "updated_at": NOW} | fields)


def trace_summary(**fields: Any) -> rm.TraceSummary:
    base = {k: v for k, v in trace_native().model_dump().items() if k not in ("input", "output", "metadata")}
    return rm.TraceSummary.model_validate(base | {"latency": 0.0, "total_cost": 0.0, "observation_count": 0,
                                                  "levels": {}, "scores": []} | fields)


def node(id: str, parent: str | None, children: list[rm.ObservationNode]) -> rm.ObservationNode:
    return rm.ObservationNode.model_validate(
        {"id": id, "trace_id": "t1", "type": "SPAN", "name": None, "parent_observation_id": parent,
         "start_time": NOW, "end_time": None, "completion_start_time": None, "level": "DEFAULT",
         "status_message": None, "model": None, "model_parameters": None, "usage_details": None,
         "cost_details": None, "input": None, "output": None, "metadata": None, "version": None,
         "environment": None, "prompt_name": None, "prompt_version": None, "cost": None, "children": children})


def score_native(**fields: Any) -> rm.ScoreNative:
    base = {k: None for k in rm.ScoreNative.model_fields}
    return rm.ScoreNative.model_validate(base | {"data_type": "NUMERIC", "source": "ANNOTATION", "timestamp": NOW,
                                                 "created_at": NOW, "updated_at": NOW, "kind": "human"} | fields)


def queue_public(**fields: Any) -> qr.QueuePublic:
    return qr.QueuePublic.model_validate(
        {"project_id": "proj", "description": None, "score_configs": [], "reviewers": [], "reviewers_per_item": 1,
         "lease_seconds": 600, "blind": False, "is_archived": False, "created_by": "u-1", "created_at": NOW,
         "updated_at": NOW} | fields)


def item_public(**fields: Any) -> dict[str, Any]:
    return {"queue_id": "q", "object_type": "TRACE", "status": "PENDING", "reviewers_per_item": 1,
            "completions": 0, "flags": 0, "assignees": None, "rule_id": None, "reason": None, "added_by": None,
            "created_at": NOW, "updated_at": NOW, "completed_at": None, "removed_at": None} | fields


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.routes.get((request.method, request.url.path), (404, {"error": {
            "code": "not_found", "message": "no route"}}))
        if body is None:
            return httpx.Response(status)
        return httpx.Response(status, json=body)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def api_for(server: FakeServer) -> Any:
    factory = HttpApiFactory("http://gw", SECRET)
    factory._client = httpx.AsyncClient(base_url="http://gw", transport=httpx.MockTransport(server))
    return factory.for_user("u-1", "proj")


async def test_calls_carry_a_signed_user_token_and_the_project(server: FakeServer) -> None:
    server.routes[("GET", "/api/v1/queues")] = (200, wire(qr.QueuePage(data=[], meta=qr.page_meta(1, 500, 0))))
    await api_for(server).list_queues()
    req = server.requests[0]
    assert req.headers["x-tally-project"] == "proj"
    token = req.headers["authorization"].removeprefix("Bearer ")
    assert read_user_token(SECRET, token) == "u-1"


async def test_native_trace_is_flattened(server: FakeServer) -> None:
    server.routes[("GET", "/api/v1/traces/t1")] = (200, wire(rm.TraceDetail(
        trace=trace_native(id="t1", name="chat", input={"camelCase": 1}),
        latency=1.5, total_cost=0.01,
        observations=[node("a", None, [node("b", "a", [])])],
        scores=[score_native(id="s", name="q", value=1)], queue_items=[],
    )))
    trace = await api_for(server).get_trace("t1")
    assert trace["latency"] == 1.5 and trace["input"] == {"camelCase": 1}
    assert [o["id"] for o in trace["observations"]] == ["a", "b"] and "children" not in trace["observations"][1]
    assert await api_for(server).get_trace("missing") is None


async def test_trace_list_maps_filters_and_score_summaries(server: FakeServer) -> None:
    server.routes[("GET", "/api/v1/traces")] = (200, wire(rm.TracePage(data=[trace_summary(id="t", scores=[
        rm.ScoreSummary(name="q", source="EVAL", count=2, mean=0.5, labels=[]),
        rm.ScoreSummary(name="c", source="ANNOTATION", count=1, mean=1.0, labels=["right"])])],
        meta=rm.PageMeta(page=1, limit=50, total=1))))
    page = await api_for(server).list_traces(TraceQuery(name="n", tags=["a", "b"], level="ERROR",
                                                         score_name="q", score_op="gte", score_value=0.5))
    params = server.requests[0].url.params
    assert params["name"] == "n" and params.get_list("tags") == ["a", "b"] and params["level"] == "ERROR"
    assert params["score_name"] == "q" and params["score_min"] == "0.5" and "score_max" not in params
    assert page.total == 1
    assert page.items[0]["scores"][0]["value"] == 0.5 and page.items[0]["scores"][1]["string_value"] == "right"


async def test_queue_config_refs_and_rule_filters_are_translated(server: FakeServer) -> None:
    server.routes[("POST", "/api/v1/queues")] = (201, wire(queue_public(id="q", name="Q", score_configs=[
        qr.ScoreConfigPublic(id="c1", required=True)])))
    server.routes[("POST", "/api/v1/queues/q/rules")] = (201, wire(qr.RulePublic(
        id="r", queue_id="q", name="x", filter={"groups": [{"conditions": [{"field": "name", "op": "eq",
                                                                             "value": "n"}]}]},
        target="TRACE", sample_rate=1.0, daily_cap=None, active=True, created_by="u-1", created_at=NOW,
        updated_at=NOW, added_today=0)))
    api = api_for(server)
    q = await api.create_queue({"name": "Q", "score_configs": [{"config_id": "c1", "required": True}]})
    assert json.loads(server.requests[0].content)["score_configs"] == [{"id": "c1", "required": True}]
    assert q["score_configs"] == [{"config_id": "c1", "required": True}]
    rule = await api.create_rule("q", {"name": "x", "groups": [[{"field": "name", "op": "eq", "value": "n"}]]})
    assert json.loads(server.requests[1].content)["filter"] == {
        "groups": [{"conditions": [{"field": "name", "op": "eq", "value": "n"}]}]}
    assert rule["groups"] == [[{"field": "name", "op": "eq", "value": "n"}]]


async def test_leasing_reviewing_and_progress(server: FakeServer) -> None:
    item = qr.ReviewItem.model_validate(item_public(id="i1", object_id="t", trace_id="t", blind=False,
                                                    score_configs=[]))
    server.routes[("POST", "/api/v1/queues/q/next")] = (200, wire(qr.LeasedItem(
        item=item, lease=qr.Lease(id="L", expires_at=NOW, slot=0))))
    beat = qr.Heartbeat(lease=qr.Lease(id="L", expires_at=NOW + timedelta(minutes=10), slot=0))
    server.routes[("POST", "/api/v1/queues/q/items/i1/heartbeat")] = (200, wire(beat))
    server.routes[("GET", "/api/v1/queues/q/progress")] = (200, wire(qr.QueueProgress(
        queue_id="q", reviewers_per_item=1,
        items=qr.StatusCounts(total=4, pending=1, skipped=0, in_progress=1, completed=2, removed=0),
        completed_fraction=0.5, items_completed_last_hour=2, items_completed_per_hour=[],
        reviewers=[qr.ReviewerProgress(reviewer="u-1", counts={"completed": 2, "skipped": 1, "flagged": 0,
                                                               "in_progress": 1},
                                       completed_last_hour=2, completed_per_hour_24h=0.1)])))
    api = api_for(server)
    lease = await api.next_item("q")
    assert (lease["item_id"], lease["lease_id"], lease["trace_id"]) == ("i1", "L", "t")
    assert (await api.heartbeat("q", "i1", "L"))["expires_at"] == wire(beat)["lease"]["expires_at"]
    p = await api.queue_progress("q")
    assert (p["total"], p["completed"], p["skipped"]) == (4, 2, 1)
    assert p["reviewers"][0]["completed"] == 2
    server.routes[("POST", "/api/v1/queues/q/next")] = (204, None)
    assert await api.next_item("q") is None


async def test_an_answer_that_does_not_fit_its_contract_is_an_error(server: FakeServer) -> None:
    # A service and the console disagreeing on a shape fails the call, not a page half rendered.
    server.routes[("GET", "/api/v1/traces")] = (200, {"data": [{"id": "t"}], "meta": {"total": 1}})
    with pytest.raises(ApiCallError) as e:
        await api_for(server).list_traces(TraceQuery())
    assert e.value.status == 502 and e.value.code == "bad_answer" and "TracePage" in e.value.message


async def test_errors_become_api_call_errors_with_details(server: FakeServer) -> None:
    server.routes[("POST", "/api/v1/scores")] = (422, {"error": {"code": "validation_error", "message": "bad",
                                                                 "details": [{"field": "value", "rule": "max",
                                                                              "message": "at most 5"}]}})
    with pytest.raises(ApiCallError) as e:
        await api_for(server).create_score({"name": "x", "value": 9})
    assert e.value.status == 422 and e.value.describe() == "bad (value: at most 5)"


async def test_unreachable_service_is_a_503(server: FakeServer) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    factory = HttpApiFactory("http://gw", SECRET)
    factory._client = httpx.AsyncClient(base_url="http://gw", transport=httpx.MockTransport(boom))
    with pytest.raises(ApiCallError) as e:
        await factory.for_user("u", "p").list_configs()
    assert e.value.status == 503


async def test_dead_letter_calls(server: FakeServer) -> None:
    server.routes[("GET", "/api/v1/dead-letters")] = (200, wire(dl.DeadLetterPage(
        data=[], meta=rm.PageMeta(page=1, limit=50, total=0),
        counts=dl.DeadLetterCounts(by_reason={}, by_status={}))))
    server.routes[("POST", "/api/v1/dead-letters/d 1/replay")] = (200, wire(dl.ReplayResult(
        replayed=1, messages=1, skipped=[], more=False)))
    server.routes[("POST", "/api/v1/dead-letters/discard")] = (200, wire(dl.DiscardResult(discarded=2, more=False)))
    api = api_for(server)
    assert (await api.list_dead_letters({"status": "open", "reason_code": None}))["meta"]["total"] == 0
    assert server.requests[-1].url.params == httpx.QueryParams({"status": "open"})
    assert await api.get_dead_letter("missing") is None
    assert (await api.replay_dead_letters(["d 1"]))["replayed"] == 1
    assert (await api.discard_dead_letters(None, "validation"))["discarded"] == 2
    assert json.loads(server.requests[-1].content) == {"reason_code": "validation"}


def test_the_http_adapter_and_the_fake_offer_every_call_of_the_port() -> None:
    # Both sides of the port are written by hand: a call missing from one only shows up as a 500 on a live page.
    import inspect

    from console.adapters.api import HttpTallyApi
    from console.adapters.port import TallyApi
    from console.testing.fakes import FakeApi

    calls = {n for n, v in vars(TallyApi).items() if inspect.iscoroutinefunction(v)}
    assert calls
    for impl in (HttpTallyApi, FakeApi):
        missing = sorted(n for n in calls if not inspect.iscoroutinefunction(getattr(impl, n, None)))
        assert not missing, f"{impl.__name__} lacks {missing}"
