"""Property tests: random and hostile payloads at every endpoint. Never a 5xx, never a crash, nothing published
for a refused request, and every event that is published is one the consumers can decode and validate."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.bootstrap import create_app_for
from ingest.config import Settings
from ingest.domain.langfuse import EVENT_TYPES
from tally_shared.envelope import decode
from tally_shared.testing.plugin import basic_auth, create_project_with_key

from .fakes import RecordingPublisher

T = TypeVar("T")
PROPS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


class AppThread:
    """The app (lifespan entered) on an event loop of its own, so synchronous hypothesis tests can call it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self.client: httpx.AsyncClient | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _run(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        async with self.app.router.lifespan_context(self.app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t"
        ) as client:
            self.client = client
            ready.set()
            await self._stop.wait()

    def __enter__(self) -> AppThread:
        self.thread.start()
        ready = threading.Event()
        self._task = asyncio.run_coroutine_threadsafe(self._run(ready), self.loop)
        if not ready.wait(30):
            raise RuntimeError(f"app did not start: {self._task}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._task.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def fake() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture(scope="module")
def app(identity_db: str, kafka_bootstrap: str, fake: RecordingPublisher) -> Iterator[AppThread]:
    s = Settings(database_url=identity_db, grpc_port=0, kafka_bootstrap_servers=kafka_bootstrap,
                 max_body_bytes=64 * 1024,
                 max_item_bytes=8 * 1024)
    with AppThread(create_app_for(s, publisher=fake)) as thread:
        yield thread


@pytest.fixture(scope="module")
def auth(identity_db: str) -> dict[str, str]:
    return basic_auth(*asyncio.run(create_project_with_key(identity_db, "p-properties")))


ENDPOINTS = ["/api/public/ingestion", "/api/v1/ingest", "/v1/traces", "/api/public/otel/v1/traces"]
CONTENT_TYPES = ["application/json", "application/x-protobuf", "text/plain", ""]

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
FIELD_NAMES = ["id", "traceId", "trace_id", "name", "startTime", "endTime", "start_time", "end_time", "timestamp",
               "level", "statusMessage", "model", "modelParameters", "usage", "usageDetails", "costDetails",
               "usage_details", "input", "output", "metadata", "tags", "userId", "sessionId", "public", "value",
               "dataType", "data_type", "parentObservationId", "completionStartTime", "type", "source", "comment",
               "environment", "version", "release"]


def _nest(depth: int) -> object:
    v: object = "x"
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


# Deeper than orjson writes (255) but within what it reads (1024).
deep_values = st.integers(240, 400).map(_nest)
field_values = json_values | deep_values | st.sampled_from([
    "2025-01-01T00:00:00Z", "DEBUG", "ERROR", "NUMERIC", "SPAN", "generation", "t1", "", "x" * 300,
    {"input": 1, "output": "2"}, {"prompt_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 1}},
    ["a", "b"], 1e308, -1, 2**63 - 1,
])
PLAUSIBLE = {
    "level": st.sampled_from(["DEBUG", "DEFAULT", "WARNING", "ERROR", "warning"]),
    "type": st.sampled_from(["SPAN", "GENERATION", "tool", "EVENT"]),
    "dataType": st.sampled_from(["NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT"]),
    "data_type": st.sampled_from(["NUMERIC", "TEXT"]),
    "source": st.sampled_from(["API", "EVAL", "annotation"]),
    "startTime": st.datetimes().map(lambda d: d.isoformat()),
    "end_time": st.datetimes().map(lambda d: d.isoformat() + "Z"),
    "timestamp": st.datetimes().map(lambda d: d.isoformat()),
    "usageDetails": st.dictionaries(st.text(max_size=5), st.integers(0, 10**6) | st.floats() | st.none()),
    "usage_details": st.dictionaries(st.text(max_size=5), st.integers(0, 10**6) | st.booleans()),
    "costDetails": st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False) | st.text(max_size=3)),
    "usage": st.dictionaries(st.sampled_from(["input", "output", "total", "promptTokens", "inputCost", "unit"]),
                             st.integers(0, 100) | st.text(max_size=3)),
    "tags": st.lists(st.text(max_size=5), max_size=3),
    "public": st.booleans(),
    "name": st.text(min_size=1, max_size=10),
    "value": st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    "metadata": json_values,
}
plausible_bodies = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=12), "traceId": st.sampled_from(["t1", "t2"]),
     "trace_id": st.sampled_from(["t1", "t2"])},
    optional={k: v for k, v in PLAUSIBLE.items()},
)
bodies = st.dictionaries(st.sampled_from(FIELD_NAMES), field_values, max_size=8) | plausible_bodies
langfuse_events = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=20), "type": st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=8),
     "body": bodies},
    optional={"timestamp": field_values},
) | json_values
native_events = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=20), "type": st.sampled_from(["trace", "observation", "score", "x"]),
     "body": bodies},
    optional={"timestamp": field_values},
) | json_values


def _post(app: AppThread, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    assert app.client is not None
    return app.call(app.client.post(path, content=body, headers=headers))


PUBLISHED: list[int] = []
LAST = [""]


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Too deep for orjson to write; the stdlib writes it (non-finite floats as null, as orjson would).
        return json.dumps(_finite(value)).encode()


def _check(app: AppThread, fake: RecordingPublisher, path: str, body: bytes, headers: dict[str, str],
           track: bool = False) -> int:
    before = len(fake.sent)
    r = _post(app, path, body, headers)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 300:
        assert len(fake.sent) == before, "a refused request published something"
        assert "error" in r.json()
    if track:
        PUBLISHED.append(len(fake.sent) - before)
    for m in fake.sent[before:]:
        decode(m.value)  # raises PoisonMessage if a consumer could not use it
    if r.status_code == 207:
        data = r.json()
        assert set(data) == {"successes", "errors"}
    LAST[0] = r.text[:300]
    return r.status_code


@pytest.fixture(scope="module", autouse=True)
def _published_something() -> Iterator[None]:
    yield
    # The generators must reach the publishing path often, or the decode checks above prove nothing.
    assert sum(1 for n in PUBLISHED if n) > len(PUBLISHED) // 8, (sum(1 for n in PUBLISHED if n), len(PUBLISHED))


@PROPS
@given(path=st.sampled_from(ENDPOINTS), body=st.binary(max_size=2048), ctype=st.sampled_from(CONTENT_TYPES),
       gz=st.booleans())
def test_random_bytes(app: AppThread, fake: RecordingPublisher, auth: dict[str, str], path: str, body: bytes,
                      ctype: str, gz: bool) -> None:
    headers = {**auth, "content-type": ctype}
    if gz:
        headers["content-encoding"] = "gzip"
        body = gzip.compress(body) if len(body) % 2 else body
    _check(app, fake, path, body, headers)


@PROPS
@given(batch=st.lists(langfuse_events, max_size=12), extra=json_values)
def test_langfuse_batches(app: AppThread, fake: RecordingPublisher, auth: dict[str, str], batch: list[Any],
                          extra: Any) -> None:
    status = _check(app, fake, "/api/public/ingestion", _dumps({"batch": batch, "metadata": extra}), auth,
                    track=True)
    assert status == 207, LAST[0]


@PROPS
@given(events=st.lists(native_events, max_size=12))
def test_native_batches(app: AppThread, fake: RecordingPublisher, auth: dict[str, str], events: list[Any]) -> None:
    status = _check(app, fake, "/api/v1/ingest", _dumps({"events": events}), auth, track=True)
    assert status == 207, LAST[0]


@PROPS
@given(payload=json_values)
def test_json_that_is_not_a_batch(app: AppThread, fake: RecordingPublisher, auth: dict[str, str],
                                  payload: Any) -> None:
    for path in ENDPOINTS:
        _check(app, fake, path, _dumps(payload), {**auth, "content-type": "application/json"})


ATTR_KEYS = ["langfuse.observation.type", "langfuse.observation.input", "langfuse.observation.output",
             "langfuse.observation.level", "langfuse.observation.usage_details", "langfuse.observation.cost_details",
             "langfuse.observation.model.parameters", "langfuse.observation.completion_start_time",
             "langfuse.observation.metadata.k", "langfuse.observation.metadata", "langfuse.trace.name",
             "langfuse.trace.tags", "langfuse.trace.public", "langfuse.trace.metadata", "langfuse.trace.metadata.x",
             "langfuse.internal.is_app_root", "user.id", "session.id", "gen_ai.operation.name",
             "gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.cost", "gen_ai.prompt.0.role",
             "gen_ai.prompt.0", "gen_ai.completion.x.y", "llm.token_count.prompt", "openinference.span.kind",
             "input.value", "output.value", "metadata", "tag.tags", "langfuse.environment", "gen_ai.request.seed"]
attr_values = st.deferred(lambda: (
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=20) | st.sampled_from(
        ['{"a": 1}', "[1,2]", '"s"', "GENERATION", "tool", "ERROR", "warning", "LLM", "chat", "12", "1.5", "true",
         '{"input": 1e400}', '"2025-01-01T00:00:00Z"', "nan", '{"input": 3, "x": null}']))
    | st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1))
    | st.builds(lambda v: AnyValue(double_value=v), st.floats())
    | st.builds(lambda v: AnyValue(bool_value=v), st.booleans())
    | st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=8))
    | st.builds(lambda vs: AnyValue(array_value={"values": vs}), st.lists(attr_values, max_size=3))
    | st.builds(lambda kvs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]}),
                st.lists(st.tuples(st.text(max_size=5), attr_values), max_size=3))
))
spans = st.fixed_dictionaries({
    "trace_id": st.sampled_from([b"\x01" * 16, b"\x02" * 16, b"\x03" * 16, b"", b"\x00" * 16, b"abc"]),
    "span_id": st.binary(min_size=8, max_size=8) | st.binary(max_size=9),
    "parent_span_id": st.sampled_from([b"", b"\x01" * 8, b"\x00" * 8]),
    "name": st.text(max_size=20),
    "start_time_unix_nano": st.integers(0, 2**64 - 1),
    "end_time_unix_nano": st.integers(0, 2**64 - 1),
    "attributes": st.lists(st.tuples(st.sampled_from(ATTR_KEYS) | st.text(max_size=10), attr_values), max_size=8),
    "status": st.fixed_dictionaries({"code": st.sampled_from([0, 1, 2]), "message": st.text(max_size=10)}),
})


@PROPS
@given(span_list=st.lists(spans, max_size=6), as_json=st.booleans())
def test_otlp_spans(app: AppThread, fake: RecordingPublisher, auth: dict[str, str], span_list: list[dict[str, Any]],
                    as_json: bool) -> None:
    req = ExportTraceServiceRequest()
    out = req.resource_spans.add().scope_spans.add().spans
    for s in span_list:
        sp = out.add()
        sp.trace_id, sp.span_id, sp.parent_span_id = s["trace_id"], s["span_id"], s["parent_span_id"]
        sp.name = s["name"]
        sp.start_time_unix_nano, sp.end_time_unix_nano = s["start_time_unix_nano"], s["end_time_unix_nano"]
        sp.status.code, sp.status.message = s["status"]["code"], s["status"]["message"]
        for k, v in s["attributes"]:
            sp.attributes.append(KeyValue(key=k, value=v))
    if as_json:
        from google.protobuf.json_format import MessageToJson

        body = MessageToJson(req).encode()
        headers = {**auth, "content-type": "application/json"}
    else:
        body = req.SerializeToString()
        headers = {**auth, "content-type": "application/x-protobuf"}
    status = _check(app, fake, "/v1/traces", body, headers, track=True)
    assert status == 200
