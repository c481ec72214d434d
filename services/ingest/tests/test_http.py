"""The endpoints against the real broker and identity database."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tally_shared.events import RecordScore, TraceIngested
from tally_shared.testing.plugin import basic_auth, create_project_with_key
from tally_shared.topics import SCORE_COMMANDS, TRACES

from .conftest import Server, read_events


@pytest.fixture
async def client(ingest_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest_server.base_url, timeout=30) as c:
        yield c


async def test_langfuse_batch_is_published_per_trace(
    client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str, kafka_bootstrap: str
) -> None:
    batch = [
        {"id": "e1", "type": "trace-create", "timestamp": "2025-01-01T00:00:00Z",
         "body": {"id": "t1", "name": "chat", "userId": "u1", "input": "q"}},
        {"id": "e2", "type": "generation-create", "timestamp": "2025-01-01T00:00:01Z",
         "body": {"id": "g1", "traceId": "t1", "model": "gpt-4o", "usage": {"input": 1, "output": 2}}},
        {"id": "e3", "type": "generation-update", "timestamp": "2025-01-01T00:00:02Z",
         "body": {"id": "g1", "traceId": "t1", "output": "a"}},
        {"id": "e4", "type": "score-create", "body": {"name": "quality", "value": 1, "traceId": "t1"}},
        {"id": "e5", "type": "span-create", "body": {"id": "s", "traceId": "t1", "level": "nope"}},
    ]
    r = await client.post("/api/public/ingestion", json={"batch": batch}, headers=basic_auth(*api_key))
    assert r.status_code == 207, r.text
    body = r.json()
    assert sorted(s["id"] for s in body["successes"]) == ["e1", "e2", "e3", "e4"]
    assert all(s["status"] == 201 for s in body["successes"])
    [err] = body["errors"]
    assert err["id"] == "e5" and err["status"] == 400 and err["error"]["field"] == "body.level"

    [(env, payload)] = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1,
                                         settle=0.5)
    assert isinstance(payload, TraceIngested) and env.key == "t1" and env.type == "TraceIngested"
    assert payload.trace is not None and payload.trace.name == "chat" and payload.trace.user_id == "u1"
    [g] = payload.observations
    assert g.id == "g1" and g.model == "gpt-4o" and g.output == "a" and g.usage_details == {"input": 1, "output": 2}
    [(senv, score)] = await read_events(kafka_bootstrap, SCORE_COMMANDS.name, lambda e: e.project == project_id,
                                        count=1)
    assert isinstance(score, RecordScore) and senv.key == "t1" and score.name == "quality" and score.value == 1


async def test_native_batch(client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str,
                            kafka_bootstrap: str) -> None:
    events = [
        {"id": "1", "type": "trace", "body": {"id": "nt", "name": "native", "tags": ["x"]}},
        {"id": "2", "type": "observation", "body": {"id": "no", "trace_id": "nt", "type": "AGENT", "input": {"a": 1}}},
        {"id": "3", "type": "observation", "body": {"id": "no2", "trace_id": "nt2", "end_time": "bad"}},
    ]
    r = await client.post("/api/v1/ingest", json={"events": events}, headers=basic_auth(*api_key))
    assert r.status_code == 207
    assert [s["id"] for s in r.json()["successes"]] == ["1", "2"]
    assert r.json()["errors"][0]["error"] == {"field": "body.end_time", "rule": "datetime",
                                              "message": "must be an ISO 8601 date-time"}
    [(_env, payload)] = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1)
    assert isinstance(payload, TraceIngested) and payload.source == "native"
    assert payload.trace is not None and payload.trace.tags == ["x"]
    assert payload.observations[0].type == "AGENT" and payload.observations[0].input == {"a": 1}


def _otlp_request(trace_id: bytes, n: int = 2) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="svc")))
    spans = rs.scope_spans.add().spans
    for i in range(n):
        sp = spans.add()
        sp.trace_id = trace_id
        sp.span_id = bytes([i + 1] * 8)
        if i:
            sp.parent_span_id = bytes([1] * 8)
        sp.name = f"span-{i}"
        sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        sp.end_time_unix_nano = 1_700_000_001_000_000_000
        sp.attributes.append(KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="m")))
        sp.attributes.append(KeyValue(key="input.value", value=AnyValue(string_value=f"in-{i}")))
    return req


@pytest.mark.parametrize("path", ["/v1/traces", "/api/public/otel/v1/traces"])
async def test_otlp_protobuf_gzip(client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str,
                                  kafka_bootstrap: str, path: str) -> None:
    trace_id = uuid.uuid4().bytes
    body = gzip.compress(_otlp_request(trace_id).SerializeToString())
    r = await client.post(path, content=body, headers={
        **basic_auth(*api_key), "content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 0
    [(env, payload)] = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1)
    assert isinstance(payload, TraceIngested) and env.key == trace_id.hex() and payload.source == "otel"
    assert payload.trace is not None and payload.trace.name == "span-0" and payload.trace.input == "in-0"
    assert [(o.name, o.type, o.model) for o in payload.observations] == [
        ("span-0", "GENERATION", "m"), ("span-1", "GENERATION", "m")]


async def test_otlp_json_with_a_rejected_span(client: httpx.AsyncClient, api_key: tuple[str, str],
                                              project_id: str, kafka_bootstrap: str) -> None:
    tid = uuid.uuid4().hex
    data = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": tid, "spanId": "00f067aa0ba902b7", "name": "ok", "startTimeUnixNano": "1700000000000000000"},
        {"traceId": tid, "spanId": "bad"},
    ]}]}]}
    r = await client.post("/v1/traces", content=orjson.dumps(data),
                          headers={**basic_auth(*api_key), "content-type": "application/json"})
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == 1
    [(env, _)] = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project == project_id, count=1)
    assert env.key == tid


async def test_authentication(client: httpx.AsyncClient, api_key: tuple[str, str], identity_db: str) -> None:
    body = {"batch": []}
    assert (await client.post("/api/public/ingestion", json=body)).status_code == 401
    wrong = basic_auth(api_key[0], "sk-wrong")
    assert (await client.post("/api/public/ingestion", json=body, headers=wrong)).status_code == 401
    assert (await client.post("/v1/traces", content=b"", headers={"authorization": "Basic !!!"})).status_code == 401
    r = await client.post("/api/v1/ingest", json={"events": []}, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    # A key pair of another project authenticates as that project only: the events carry its project.
    other = f"p-{uuid.uuid4().hex[:10]}"
    keys = await create_project_with_key(identity_db, other)
    r = await client.post("/api/public/ingestion", json=body, headers=basic_auth(*keys))
    assert r.status_code == 207


async def test_key_of_one_project_writes_only_into_it(
    client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str, identity_db: str, kafka_bootstrap: str
) -> None:
    other = f"p-{uuid.uuid4().hex[:10]}"
    await create_project_with_key(identity_db, other)
    batch = [{"id": "x", "type": "trace-create", "body": {"id": "iso", "metadata": {"project": other}},
              "project": other}]
    r = await client.post("/api/public/ingestion", json={"batch": batch, "project": other},
                          headers={**basic_auth(*api_key), "x-tally-project": other})
    assert r.status_code == 207
    found = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.project in (project_id, other), count=1,
                              settle=0.5)
    assert [e.project for e, _ in found] == [project_id]


async def test_bad_input(client: httpx.AsyncClient, api_key: tuple[str, str], ingest_server: Server) -> None:
    auth = basic_auth(*api_key)
    limit = ingest_server.settings.max_body_bytes
    r = await client.post("/api/public/ingestion", content=b"{not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await client.post("/api/public/ingestion", json={"nobatch": 1}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["details"][0]["field"] == "batch"
    r = await client.post("/api/v1/ingest", json=[1, 2], headers=auth)
    assert r.status_code == 400
    r = await client.post("/v1/traces", content=b"\xff\xff\xff garbage",
                          headers={**auth, "content-type": "application/x-protobuf"})
    assert r.status_code == 400
    r = await client.post("/v1/traces", content=b"{}", headers={**auth, "content-type": "text/plain"})
    assert r.status_code == 415
    r = await client.post("/v1/traces", content=b"{}", headers={**auth, "content-type": "application/json",
                                                               "content-encoding": "br"})
    assert r.status_code == 415
    r = await client.post("/v1/traces", content=b"not gzip", headers={
        **auth, "content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400
    # Over the limit: declared, streamed without a length, and only after gunzip (a small bomb).
    big = b"[" + b"1," * (limit // 2) + b"1]"
    r = await client.post("/api/public/ingestion", content=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = await client.post("/api/public/ingestion", content=chunks(), headers=auth)
    assert r.status_code == 413
    bomb = gzip.compress(b" " * (limit + 10))
    assert len(bomb) < limit
    r = await client.post("/api/public/ingestion", content=bomb, headers={**auth, "content-encoding": "gzip"})
    assert r.status_code == 413
    # An item over the item limit is rejected in the 207; the rest goes through.
    item_limit = ingest_server.settings.max_item_bytes
    batch = [{"id": "big", "type": "span-create", "body": {"id": "b", "traceId": "t", "input": "x" * item_limit}},
             {"id": "small", "type": "span-create", "body": {"id": "s", "traceId": "t"}}]
    r = await client.post("/api/public/ingestion", json={"batch": batch}, headers=auth)
    assert r.status_code == 207
    assert [e["id"] for e in r.json()["errors"]] == ["big"] and r.json()["errors"][0]["status"] == 413
    assert [s["id"] for s in r.json()["successes"]] == ["small"]


async def test_metrics_and_openapi(client: httpx.AsyncClient, api_key: tuple[str, str]) -> None:
    await client.post("/api/public/ingestion", json={"batch": [{"id": "m", "type": "bogus", "body": {}}]},
                      headers=basic_auth(*api_key))
    text = (await client.get("/metrics")).text
    assert 'tally_ingest_events_total{endpoint="langfuse",outcome="rejected",reason="invalid"}' in text
    assert "tally_ingest_request_seconds_bucket" in text and "tally_ingest_bytes_total" in text
    spec = (await client.get("/openapi.json")).json()
    assert "NativeBatch" in spec["components"]["schemas"] and "/api/v1/ingest" in spec["paths"]


async def test_events_land_on_the_kafka_default_partition_of_their_trace(
    client: httpx.AsyncClient, api_key: tuple[str, str], project_id: str, kafka_bootstrap: str
) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.partitioner import DefaultPartitioner

    traces = [f"{project_id}-t{i}" for i in range(24)]
    events = [{"id": t, "type": "trace", "body": {"id": t}} for t in traces]
    r = await client.post("/api/v1/ingest", json={"events": events}, headers=basic_auth(*api_key))
    assert r.status_code == 207 and len(r.json()["successes"]) == 24
    consumer = AIOKafkaConsumer(TRACES.name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: dict[str, int] = {}
    try:
        parts = sorted(consumer.partitions_for_topic(TRACES.name) or range(TRACES.partitions))
        while len(seen) < 24:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                break
            for records in batch.values():
                for rec in records:
                    if rec.key is not None and rec.key.decode() in traces:
                        seen[rec.key.decode()] = rec.partition
    finally:
        await consumer.stop()
    assert len(seen) == 24
    assert all(p == DefaultPartitioner()(k.encode(), parts, parts) for k, p in seen.items())
    assert len(set(seen.values())) > 1


async def test_otlp_fast_path_answers_as_the_app_would(client: httpx.AsyncClient, api_key: tuple[str, str],
                                                       project_id: str, kafka_bootstrap: str) -> None:
    """The OTLP paths are served by ``OtlpFastPath`` outside FastAPI's router: the same errors, request metrics
    by route template, and everything but POST still answered by the router."""
    auth = basic_auth(*api_key)
    r = await client.post("/api/public/otel/v1/traces", content=b"")
    assert r.status_code == 401 and r.json() == {"error": {"code": "unauthorized",
                                                           "message": "authentication required"}}
    assert r.headers["www-authenticate"] == 'Basic realm="tally"'
    r = await client.post("/v1/traces", content=b"{}", headers={**auth, "content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = await client.post("/v1/traces", content=b"[]", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "bad_request", "message": "body must be an ExportTraceServiceRequest object"}
    assert (await client.get("/v1/traces", headers=auth)).status_code == 405
    trace_id = uuid.uuid4().bytes
    r = await client.post("/api/public/otel/v1/traces", content=_otlp_request(trace_id).SerializeToString(),
                          headers={**auth, "content-type": "application/x-protobuf; charset=binary"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 0
    [(_env, payload)] = await read_events(kafka_bootstrap, TRACES.name, lambda e: e.key == trace_id.hex(), count=1)
    assert isinstance(payload, TraceIngested) and len(payload.observations) == 2
    text = (await client.get("/metrics")).text
    assert 'tally_http_requests_total{method="POST",route="/api/public/otel/v1/traces",status="200"}' in text
    assert 'tally_http_requests_total{method="POST",route="/v1/traces",status="415"}' in text
    assert 'tally_ingest_request_seconds_count{endpoint="otlp",status="415"}' in text
    assert 'tally_ingest_requests_rejected_total{endpoint="otlp",reason="unsupported_media_type"}' in text
