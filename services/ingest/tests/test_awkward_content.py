"""Awkward but valid content at intake: kept with the documented transformation (tally_shared.content), refused
per item when no reader could hold it; scores refused at intake exactly when scoring would refuse them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.adapters.configs import HttpConfigLookup, ScoringUnavailable
from ingest.bootstrap import create_app_for
from ingest.config import Settings
from tally_shared.content import NUL_REPLACEMENT as NUL
from tally_shared.content import SURROGATE_REPLACEMENT as BAD
from tally_shared.envelope import decode
from tally_shared.events import RecordScore, ScoreConfigData, ScoreDataType, TraceIngested
from tally_shared.testing.plugin import basic_auth, create_project_with_key

from .fakes import FakeConfigs, RecordingPublisher


class App:
    def __init__(self, client: httpx.AsyncClient, publisher: RecordingPublisher, configs: FakeConfigs,
                 auth: dict[str, str], project: str) -> None:
        self.client, self.publisher, self.configs, self.auth, self.project = client, publisher, configs, auth, project

    async def post(self, path: str, raw: bytes, content_type: str = "application/json") -> httpx.Response:
        self.publisher.sent.clear()
        return await self.client.post(path, content=raw, headers={**self.auth, "content-type": content_type})

    def published(self) -> list[Any]:
        return [decode(m.value)[1] for m in self.publisher.sent]


@pytest.fixture(scope="module")
async def app(identity_db: str, kafka_bootstrap: str) -> AsyncIterator[App]:
    fake, configs = RecordingPublisher(), FakeConfigs()
    project = f"p-{uuid.uuid4().hex[:10]}"
    application = create_app_for(Settings(database_url=identity_db, kafka_bootstrap_servers=kafka_bootstrap),
                                 publisher=fake, configs=configs)
    auth = basic_auth(*await create_project_with_key(identity_db, project))
    async with application.router.lifespan_context(application), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://t"
    ) as client:
        yield App(client, fake, configs, auth, project)


def _statuses(r: httpx.Response) -> dict[str, int]:
    assert r.status_code == 207, r.text
    body = r.json()
    return {**{s["id"]: s["status"] for s in body["successes"]}, **{e["id"]: e["status"] for e in body["errors"]}}


async def test_nul_and_lone_surrogates_are_kept_transformed_and_bad_numbers_refused_per_item(app: App) -> None:
    raw = (b'{"batch": ['
           b'{"id": "ok", "type": "trace-create", "body": {"id": "t\\u0000x", "name": "a\\u0000b", '
           b'"input": {"k\\u0000": ["\\ud800", "\\ud83d\\ude00"]}, "metadata": {"big": 1180591620717411303424}}},'
           b'{"id": "inf", "type": "trace-create", "body": {"id": "t2", "metadata": {"v": 1e400}}},'
           b'{"id": "nan", "type": "span-create", "body": {"id": "s", "traceId": "t3", "output": [NaN]}}]}')
    r = await app.post("/api/public/ingestion", raw)
    assert _statuses(r) == {"ok": 201, "inf": 400, "nan": 400}
    errors = {e["id"]: e["error"] for e in r.json()["errors"]}
    assert (errors["inf"]["field"], errors["inf"]["rule"]) == ("body.metadata.v", "finite_number")
    assert (errors["nan"]["field"], errors["nan"]["rule"]) == ("body.output[0]", "finite_number")
    [ev] = app.published()
    assert isinstance(ev, TraceIngested) and ev.trace is not None
    assert ev.trace_id == f"t{NUL}x" and app.publisher.sent[0].key == f"t{NUL}x".encode()
    assert ev.trace.name == f"a{NUL}b"
    assert ev.trace.input == {f"k{NUL}": [BAD, "\U0001f600"]}
    assert ev.trace.metadata == {"big": float(2**70)}


async def test_native_batch_and_otlp_json_get_the_same_transformation(app: App) -> None:
    r = await app.post("/api/v1/ingest", b'{"events": [{"id": "e", "type": "observation", "body": {"id": "o", '
                       b'"trace_id": "t", "status_message": "x\\u0000", "usage_details": {"input": 1e308}}}]}')
    assert _statuses(r) == {"e": 201}
    [ev] = app.published()
    assert ev.observations[0].status_message == f"x{NUL}" and ev.observations[0].usage_details == {"input": 1e308}

    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "n@",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
            "attributes": [{"key": "input.value", "value": {"stringValue": "q@"}},
                           {"key": "big", "value": {"intValue": str(2**70)}}]}
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).replace(b"@", b"\\u0000\\udc00")
    r = await app.post("/v1/traces", body)
    assert r.status_code == 200 and r.json() == {}, r.text
    [ev] = app.published()
    obs = ev.observations[0]
    assert obs.name == f"n{NUL}{BAD}" and obs.input == f"q{NUL}{BAD}"
    assert obs.metadata["attributes"]["big"] == float(2**70)

    # A span holding a number no double holds is refused on its own (partial success), the others kept.
    bad = {**span, "spanId": "c7ad6b7169203331", "attributes": [{"key": "v", "value": {"doubleValue": "@"}}]}
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span, bad]}]}]}).replace(b'"@"', b"1e400")
    r = await app.post("/v1/traces", body.replace(b"@", b"\\u0000"))
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == 1, r.text
    assert "c7ad6b7169203331" in r.json()["partialSuccess"]["errorMessage"]
    assert [o.id for ev in app.published() for o in ev.observations] == ["b7ad6b7169203331"]


async def test_otlp_protobuf_strings_with_nul_are_kept_transformed(app: App) -> None:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), b"\x01" * 8, "n\x00"
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    sp.attributes.append(KeyValue(key="k\x00", value=AnyValue(string_value="v\x00")))
    r = await app.post("/v1/traces", req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200
    [ev] = app.published()
    assert ev.observations[0].name == f"n{NUL}"
    assert ev.observations[0].metadata["attributes"] == {f"k{NUL}": f"v{NUL}"}


@pytest.mark.parametrize(("ts", "ok"), [
    ("2024-03-01T12:00:00Z", True), ("2024-03-01T12:00:00+05:45", True), ("2024-03-01T12:00:00", True),
    ("2024-03-01T12:00:00.123456789Z", True), ("2024-03-01t12:00:00z", True), ("1900-01-01T00:00:00Z", True),
    ("0001-01-01T00:00:00Z", True), ("9999-12-31T23:59:59.999999Z", True),
    ("0001-01-01T00:00:00+05:45", False), ("9999-12-31T23:59:59-05:00", False), ("2024-02-30T00:00:00Z", False),
    ("2024-03-01T24:00:00Z", False),
])
async def test_odd_iso_8601_forms_are_accepted_or_refused_per_item(app: App, ts: str, ok: bool) -> None:
    r = await app.post("/api/public/ingestion", orjson.dumps({"batch": [
        {"id": "e", "type": "trace-create", "body": {"id": "t", "timestamp": ts}}]}))
    assert _statuses(r) == {"e": 201 if ok else 400}, r.text
    if ok:
        [ev] = app.published()
        # Offsets are kept as sent (PostgreSQL stores the instant, read back in UTC).
        assert ev.trace.timestamp.utcoffset() is not None
    else:
        assert r.json()["errors"][0]["error"] == {"field": "body.timestamp", "rule": "datetime",
                                                  "message": r.json()["errors"][0]["error"]["message"]}


def _config(project: str, cid: str, **kw: Any) -> ScoreConfigData:
    return ScoreConfigData(id=cid, version=kw.pop("version", 3), name=kw.pop("name", "quality"),
                           data_type=kw.pop("data_type", ScoreDataType.NUMERIC), **kw)


async def test_scores_scoring_would_refuse_are_refused_per_item(app: App) -> None:
    app.configs.configs[(app.project, "cfg")] = _config(app.project, "cfg", min_value=0, max_value=1, step=0.5)
    app.configs.configs[(app.project, "cats")] = _config(
        app.project, "cats", name="tone", data_type=ScoreDataType.CATEGORICAL,
        categories=[{"label": "good", "value": 1}, {"label": "bad", "value": 0}])
    app.configs.configs[(app.project, "old")] = _config(app.project, "old", name="old", is_archived=True)

    def score(item: str, **body: Any) -> dict[str, Any]:
        return {"id": item, "type": "score-create", "body": {"traceId": "t", "name": "quality", "value": 1, **body}}

    r = await app.post("/api/public/ingestion", orjson.dumps({"batch": [
        score("eval-no-evaluator", source="EVAL"),
        score("eval", source="EVAL", evaluatorName="judge", evaluatorVersion="2"),
        score("unknown-config", configId="nope"),
        score("above-range", configId="cfg", value=2),
        score("off-step", configId="cfg", value=0.3),
        score("wrong-type", configId="cfg", value="high"),
        score("wrong-data-type", configId="cfg", dataType="BOOLEAN"),
        score("wrong-name", configId="cfg", name="other"),
        score("unknown-category", configId="cats", name="tone", value="meh"),
        score("archived", configId="old", name="old"),
        score("bad-environment", environment="Production"),
        score("no-target", traceId=None),
        score("in-range", configId="cfg", value=0.5),
        score("category", configId="cats", name="tone", value="good"),
    ]}))
    statuses = _statuses(r)
    assert {k for k, v in statuses.items() if v == 201} == {"eval", "in-range", "category"}, r.text
    rules = {e["id"]: (e["status"], e["error"]["field"], e["error"]["rule"]) for e in r.json()["errors"]}
    assert rules == {
        "eval-no-evaluator": (400, "body.evaluatorName", "required_for_eval"),
        "unknown-config": (400, "body.configId", "exists"),
        "above-range": (400, "body.value", "maximum"),
        "off-step": (400, "body.value", "step"),
        "wrong-type": (400, "body.value", "type"),
        "wrong-data-type": (400, "body.dataType", "matches_config"),
        "wrong-name": (400, "body.name", "matches_config"),
        "unknown-category": (400, "body.value", "category"),
        "archived": (400, "body.configId", "archived"),
        "bad-environment": (400, "body.environment", "pattern"),
        "no-target": (400, "body.traceId", "target_required"),
    }
    published = {p.idempotency_key: p for p in app.published() if isinstance(p, RecordScore)}
    assert set(published) == {"eval", "in-range", "category"}
    assert (published["eval"].evaluator_name, published["eval"].evaluator_version) == ("judge", "2")
    assert published["in-range"].config_version == 3 and published["eval"].config_version is None
    # The caller's own credentials are what scoring is asked with.
    assert all(h == {"authorization": app.auth["Authorization"]} for _, _, h in app.configs.lookups)


async def test_native_scores_name_fields_as_sent(app: App) -> None:
    r = await app.post("/api/v1/ingest", orjson.dumps({"events": [
        {"id": "e", "type": "score", "body": {"name": "q", "value": 1, "trace_id": "t", "source": "EVAL"}}]}))
    [error] = r.json()["errors"]
    assert (error["status"], error["error"]["field"], error["error"]["rule"]) == (
        400, "body.evaluator_name", "required_for_eval")


async def test_scoring_unreachable_makes_a_score_a_retryable_503_never_a_201(app: App) -> None:
    app.configs.down = True
    try:
        r = await app.post("/api/public/ingestion", orjson.dumps({"batch": [
            {"id": "s", "type": "score-create", "body": {"traceId": "t", "name": "q", "value": 1, "configId": "c"}},
            {"id": "plain", "type": "score-create", "body": {"traceId": "t", "name": "q", "value": 1}},
            {"id": "tr", "type": "trace-create", "body": {"id": "t"}},
        ]}))
    finally:
        app.configs.down = False
    assert _statuses(r) == {"s": 503, "plain": 201, "tr": 201}
    assert r.json()["errors"][0]["error"]["reason"] == "scoring_unavailable"


async def test_config_lookup_is_cached_forwards_credentials_and_reports_scoring_down() -> None:
    calls: list[httpx.Request] = []
    config = {**_config("p", "c").model_dump(mode="json"), "project_id": "p"}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path.endswith("/c"):
            return httpx.Response(200, json=config)
        if request.url.path.endswith("/boom"):
            return httpx.Response(500)
        return httpx.Response(404, json={"error": {"code": "not_found"}})

    lookup = HttpConfigLookup("http://scoring", transport=httpx.MockTransport(handler))
    auth = {"authorization": "Basic x"}
    try:
        assert (await lookup.get("p", "c", auth)) == _config("p", "c")
        assert (await lookup.get("p", "c", auth)) == _config("p", "c")
        assert await lookup.get("p", "a/b", auth) is None
        assert await lookup.get("p", "a/b", auth) is None  # absence is not cached: a new config counts at once
        with pytest.raises(ScoringUnavailable):
            await lookup.get("p", "boom", auth)
    finally:
        await lookup.close()
    assert [c.url.raw_path.decode() for c in calls] == ["/api/v1/score-configs/c", "/api/v1/score-configs/a%2Fb",
                                           "/api/v1/score-configs/a%2Fb", "/api/v1/score-configs/boom"]
    assert all(c.headers["authorization"] == "Basic x" for c in calls)
