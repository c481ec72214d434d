"""Pure mapping rules: Langfuse batch, native batch and OTLP spans to TraceIngested / RecordScore events."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from ingest.domain import langfuse, native, otel
from ingest.domain.batch import Batch
from ingest.domain.report import Report
from tally_shared.envelope import decode
from tally_shared.events import RecordScore, TraceIngested

LIMIT = 1024 * 1024


def _decoded(batch: Batch, project: str = "p1") -> list[tuple[object, object]]:
    return [decode(m.value) for m in batch.outgoing(project)]


def test_langfuse_batch_groups_by_trace_and_merges_updates() -> None:
    events = [
        {"id": "e1", "type": "trace-create", "timestamp": "2025-01-01T00:00:00Z",
         "body": {"id": "t1", "name": "chat", "userId": "u1", "sessionId": "s1", "tags": ["a"], "input": {"q": 1},
                  "metadata": {"k": "v"}, "release": "r1", "environment": "prod"}},
        {"id": "e2", "type": "generation-create", "timestamp": "2025-01-01T00:00:01Z",
         "body": {"id": "g1", "traceId": "t1", "name": "llm", "model": "gpt-4o", "startTime": "2025-01-01T00:00:01Z",
                  "modelParameters": {"temperature": 0.2}, "usage": {"input": 10, "output": 5, "total": 15},
                  "input": [{"role": "user", "content": "hi"}]}},
        {"id": "e3", "type": "generation-update", "timestamp": "2025-01-01T00:00:02Z",
         "body": {"id": "g1", "traceId": "t1", "output": "hello", "endTime": "2025-01-01T00:00:02Z",
                  "level": "WARNING", "statusMessage": "slow", "usageDetails": {"input": 11, "output": 6},
                  "costDetails": {"total": 0.01}}},
        {"id": "e4", "type": "span-create", "body": {"id": "s1", "traceId": "t2", "name": "other"}},
        {"id": "e5", "type": "tool-create", "body": {"id": "tool1", "traceId": "t1", "parentObservationId": "g1"}},
        {"id": "e6", "type": "score-create", "timestamp": "2025-01-01T00:00:03Z",
         "body": {"name": "quality", "value": 0.9, "traceId": "t1", "dataType": "NUMERIC", "comment": "ok"}},
        {"id": "e7", "type": "sdk-log", "body": {"log": "x"}},
    ]
    batch, report = langfuse.parse_batch(events, LIMIT)
    assert report.errors == {}
    assert report.unpublished == {6}
    decoded = _decoded(batch)
    traces = {e.key: p for e, p in decoded if isinstance(p, TraceIngested)}
    scores = [(e, p) for e, p in decoded if isinstance(p, RecordScore)]
    assert set(traces) == {"t1", "t2"}
    t1 = traces["t1"]
    assert t1.source == "langfuse"
    assert t1.trace is not None and t1.trace.name == "chat" and t1.trace.user_id == "u1"
    assert t1.trace.session_id == "s1" and t1.trace.tags == ["a"] and t1.trace.release == "r1"
    obs = {o.id: o for o in t1.observations}
    g = obs["g1"]
    assert g.type == "GENERATION" and g.model == "gpt-4o" and g.output == "hello" and g.level == "WARNING"
    assert g.usage_details == {"input": 11, "output": 6} and g.cost_details == {"total": 0.01}
    assert g.model_parameters == {"temperature": 0.2} and g.input == [{"role": "user", "content": "hi"}]
    assert g.end_time is not None and g.status_message == "slow"
    assert obs["tool1"].type == "TOOL" and obs["tool1"].parent_observation_id == "g1"
    [(env, score)] = scores
    assert env.key == "t1" and score.name == "quality" and score.value == 0.9 and score.idempotency_key == "e6"
    # Partial update semantics: a field the request did not mention is absent, not null.
    raw = orjson.loads(batch.outgoing("p1")[1].value)
    assert "input" not in raw["payload"]["observations"][0] and "trace" not in raw["payload"]


def test_langfuse_rejects_bad_items_and_keeps_the_rest() -> None:
    events = [
        {"id": "ok", "type": "span-create", "body": {"id": "s", "traceId": "t"}},
        {"id": "badtype", "type": "nope", "body": {}},
        {"id": "badlevel", "type": "span-create", "body": {"id": "s2", "traceId": "t", "level": "LOUD"}},
        {"id": "badtime", "type": "span-create", "timestamp": "yesterday", "body": {"id": "s3", "traceId": "t"}},
        {"id": "update-no-trace", "type": "span-update", "body": {"id": "s4"}},
        {"id": "big", "type": "span-create", "body": {"id": "s5", "traceId": "t", "input": "x" * 2000}},
        {"id": "score-no-name", "type": "score-create", "body": {"traceId": "t", "value": 1}},
        "not an object",
        {"id": "longid", "type": "span-create", "body": {"id": "s" * 300, "traceId": "t"}},
    ]
    batch, report = langfuse.parse_batch(events, 1000)
    assert set(report.errors) == {1, 2, 3, 4, 5, 6, 7, 8}
    assert report.errors[5][0] == 413 and report.errors[2][0] == 400
    assert report.errors[2][2]["field"] == "body.level"
    assert report.ids[7] == "#7"
    [(_env, payload)] = _decoded(batch)
    assert isinstance(payload, TraceIngested) and [o.id for o in payload.observations] == ["s"]


def test_observation_without_trace_gets_its_own_trace() -> None:
    batch, _report = langfuse.parse_batch(
        [{"id": "e", "type": "event-create",
          "body": {"id": "ev", "name": "click", "startTime": "2025-01-01T00:00:00Z"}}], LIMIT)
    [(env, payload)] = _decoded(batch)
    assert isinstance(payload, TraceIngested) and payload.trace is not None
    assert payload.trace.name == "click" and payload.observations[0].trace_id == payload.trace_id == env.key


def test_event_ids_are_derived_from_content() -> None:
    events = [{"id": "e", "type": "span-create", "timestamp": "2025-01-01T00:00:00Z",
               "body": {"id": "s", "traceId": "t", "input": "same"}}]
    first = langfuse.parse_batch(events, LIMIT)[0].outgoing("p")
    again = langfuse.parse_batch(events, LIMIT)[0].outgoing("p")
    other_project = langfuse.parse_batch(events, LIMIT)[0].outgoing("q")
    assert first[0].value == again[0].value
    assert decode(first[0].value)[0].id != decode(other_project[0].value)[0].id


def test_native_batch() -> None:
    events = [
        {"id": "1", "type": "trace", "timestamp": "2025-01-01T00:00:00+02:00",
         "body": {"id": "t", "name": "n", "dataset_run_name": "run-1", "dataset_item_id": "item-1"}},
        {"id": "2", "type": "observation", "body": {"id": "o", "trace_id": "t", "type": "retriever",
                                                      "output": None}},
        {"id": "3", "type": "score",
         "body": {"name": "q", "value": "good", "trace_id": "t", "data_type": "CATEGORICAL"}},
        {"id": "4", "type": "observation", "body": {"id": "o2"}},
    ]
    batch, report = native.parse_events(events, LIMIT)
    assert list(report.errors) == [3] and report.errors[3][2]["field"] == "body.trace_id"
    decoded = _decoded(batch)
    env, trace = decoded[0]
    assert isinstance(trace, TraceIngested) and trace.trace is not None
    assert trace.trace.dataset_run_name == "run-1" and trace.source == "native"
    assert env.occurred_at.isoformat() == "2024-12-31T22:00:00+00:00"
    assert trace.observations[0].type == "RETRIEVER"
    # "output": null was said, so it is present in the payload.
    assert "output" in orjson.loads(batch.outgoing("p")[0].value)["payload"]["observations"][0]


def _span(attrs: dict[str, object], parent: str | None = None, **kw: object) -> otel.SpanView:
    base = dict(trace_id="ab" * 16, span_id="cd" * 8, parent_id=parent, name="root", start_ns=1_700_000_000_000_000_000,
                end_ns=1_700_000_001_000_000_000, status_code=0, status_message="", attrs=attrs, events=[],
                resource={"service.name": "svc", "deployment.environment": "staging"})
    base.update(kw)
    return otel.SpanView(**base)  # type: ignore[arg-type]


def test_langfuse_sdk_attributes() -> None:
    obs, trace = otel.map_span(_span({
        "langfuse.observation.type": "generation",
        "langfuse.observation.input": '{"messages": [1]}',
        "langfuse.observation.output": "plain text",
        "langfuse.observation.model.name": "gpt-4o",
        "langfuse.observation.model.parameters": '{"temperature": 0.1}',
        "langfuse.observation.usage_details": '{"input": 3, "output": 4}',
        "langfuse.observation.cost_details": '{"total": 0.5}',
        "langfuse.observation.level": "ERROR",
        "langfuse.observation.status_message": "boom",
        "langfuse.observation.metadata.k": '"v"',
        "langfuse.observation.metadata.n": "7",
        "langfuse.trace.name": "my-trace",
        "langfuse.trace.tags": ["x", "y"],
        "langfuse.trace.metadata.team": '"core"',
        "user.id": "u", "session.id": "s",
        "langfuse.environment": "prod", "langfuse.release": "1.2", "langfuse.version": "v9",
        "langfuse.internal.is_app_root": True,
        "custom.attr": 1,
    }))
    assert obs["type"] == "GENERATION" and obs["input"] == {"messages": [1]} and obs["output"] == "plain text"
    assert obs["model"] == "gpt-4o" and obs["model_parameters"] == {"temperature": 0.1}
    assert obs["usage_details"] == {"input": 3, "output": 4} and obs["cost_details"] == {"total": 0.5}
    assert obs["level"] == "ERROR" and obs["status_message"] == "boom" and obs["environment"] == "prod"
    assert obs["metadata"] == {"k": "v", "n": 7, "attributes": {"custom.attr": 1}} and obs["version"] == "v9"
    assert trace is not None and trace["name"] == "my-trace" and trace["tags"] == ["x", "y"]
    assert trace["user_id"] == "u" and trace["session_id"] == "s"
    assert trace["metadata"] == {"team": "core",
                                 "resourceAttributes": {"service.name": "svc", "deployment.environment": "staging"}}
    assert trace["input"] == {"messages": [1]} and trace["output"] == "plain text" and trace["release"] == "1.2"


def test_resource_attributes_are_kept_on_the_trace() -> None:
    resource = {"service.name": "checkout", "service.version": "3.1", "deployment.environment.name": "prod",
                "host.name": "h1"}
    obs, trace = otel.map_span(_span({}, resource=resource))
    assert trace is not None and trace["metadata"] == {"resourceAttributes": resource}
    assert trace["environment"] == "prod" and trace["version"] == "3.1"
    assert obs["environment"] == "prod" and obs["version"] == "3.1" and "metadata" not in obs
    # A child span gives its trace the environment, and leaves the trace's metadata to the root.
    obs, trace = otel.map_span(_span({}, parent="ef" * 8, resource=resource))
    assert trace == {"id": "ab" * 16, "environment": "prod"}
    # A span's own version wins over the service's.
    obs, _ = otel.map_span(_span({"langfuse.version": "v9"}, resource=resource))
    assert obs["version"] == "v9"


def test_resource_attributes_are_bounded() -> None:
    resource = {"service.name": "svc", "huge": "x" * (otel.MAX_RESOURCE_BYTES + 1)}
    _, trace = otel.map_span(_span({}, resource=resource))
    assert trace is not None and trace["metadata"]["resourceAttributes"] == {"service.name": "svc"}


def test_trace_metadata_of_one_request_is_merged_across_its_spans() -> None:
    batch, report = Batch("otel"), Report()
    child = _span({"langfuse.trace.metadata.team": '"core"'}, parent="ef" * 8, span_id="01" * 8)
    root = _span({}, span_id="ef" * 8)

    def spans() -> Iterator[otel.SpanView]:
        for sp in (child, root):
            report.add(sp.span_id)
            yield sp

    otel.add_spans(batch, report, spans())
    (msg,) = batch.outgoing("p")
    payload = orjson.loads(msg.value)["payload"]
    assert payload["trace"]["metadata"] == {
        "team": "core", "resourceAttributes": {"service.name": "svc", "deployment.environment": "staging"}}


def test_prompt_of_a_generation() -> None:
    obs, _ = otel.map_span(_span({"langfuse.observation.type": "generation",
                                  "langfuse.observation.prompt.name": "qa-prompt",
                                  "langfuse.observation.prompt.version": 3}))
    assert obs["prompt_name"] == "qa-prompt" and obs["prompt_version"] == 3 and "metadata" not in obs
    obs, _ = otel.map_span(_span({"langfuse.prompt.name": "old-style", "langfuse.prompt.version": "2"}))
    assert obs["prompt_name"] == "old-style" and obs["prompt_version"] == 2
    obs, _ = otel.map_span(_span({"langfuse.observation.prompt.version": "three"}))
    assert "prompt_version" not in obs
    assert obs["metadata"]["attributes"] == {"langfuse.observation.prompt.version": "three"}
    batch, report = langfuse.parse_batch([{"id": "e1", "type": "generation-create", "timestamp": "2025-01-01T00:00:00Z",
                                           "body": {"id": "g1", "traceId": "t1", "promptName": "qa-prompt",
                                                    "promptVersion": 2}},
                                          {"id": "e2", "type": "generation-create", "timestamp": "2025-01-01T00:00:00Z",
                                           "body": {"id": "g2", "traceId": "t1", "promptVersion": True}}], None)
    assert report.errors[1][2]["field"] == "body.promptVersion"
    (msg,) = batch.outgoing("p")
    (g1,) = orjson.loads(msg.value)["payload"]["observations"]
    assert (g1["prompt_name"], g1["prompt_version"]) == ("qa-prompt", 2)


def test_langfuse_experiment_attributes_keep_the_dataset() -> None:
    _, trace = otel.map_span(_span({"langfuse.experiment.name": "run-1", "langfuse.experiment.item.id": "item-1",
                                    "langfuse.experiment.dataset.id": "ds-1"}))
    assert trace is not None
    assert (trace["dataset_run_name"], trace["dataset_item_id"], trace["dataset_id"]) == ("run-1", "item-1", "ds-1")


def test_genai_and_openinference_attributes() -> None:
    obs, trace = otel.map_span(_span({
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude", "gen_ai.request.temperature": 0.3,
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 8,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "yo",
    }, parent="ef" * 8, status_code=2, status_message="failed"))
    assert obs["type"] == "GENERATION" and obs["model"] == "claude"
    assert obs["model_parameters"] == {"temperature": 0.3} and obs["usage_details"] == {"input": 12, "output": 8}
    assert obs["input"] == [{"role": "user", "content": "hi"}]
    assert obs["output"] == [{"role": "assistant", "content": "yo"}]
    assert obs["level"] == "ERROR" and obs["status_message"] == "failed" and obs["environment"] == "staging"
    # A child span says nothing else about its trace than its environment.
    assert trace == {"id": "ab" * 16, "environment": "staging"}
    obs, _ = otel.map_span(_span({
        "openinference.span.kind": "LLM", "llm.model_name": "m", "input.value": '{"a": 1}', "output.value": "b",
        "llm.token_count.prompt": 5, "llm.token_count.completion": 6, "llm.token_count.total": 11,
        "llm.invocation_parameters": '{"max_tokens": 10}',
    }))
    assert obs["type"] == "GENERATION" and obs["model"] == "m" and obs["input"] == {"a": 1}
    assert obs["output"] == "b" and obs["usage_details"] == {"input": 5, "output": 6, "total": 11}
    assert obs["model_parameters"] == {"max_tokens": 10}
    obs, _ = otel.map_span(_span({"openinference.span.kind": "TOOL"}))
    assert obs["type"] == "TOOL"


def test_otlp_json_spans_are_grouped_by_trace() -> None:
    data = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                               "scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "root",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000001000000000,
         "attributes": [{"key": "input.value", "value": {"stringValue": "q"}},
                        {"key": "n", "value": {"intValue": "5"}},
                        {"key": "arr", "value": {"arrayValue": {"values": [{"boolValue": True}]}}}]},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7",
         "parentSpanId": "b7ad6b7169203331", "name": "child"},
        {"traceId": "zz", "spanId": "00f067aa0ba902b7"},
    ]}]}]}
    report = Report()
    batch = Batch("otel")
    otel.add_spans(batch, report, otel.json_spans(data, report, LIMIT))
    assert list(report.errors) == [2]
    [(_env, payload)] = _decoded(batch)
    assert isinstance(payload, TraceIngested) and payload.trace is not None
    assert payload.trace_id == "0af7651916cd43dd8448eb211c80319c" and payload.trace.input == "q"
    assert [o.name for o in payload.observations] == ["root", "child"]
    assert payload.observations[0].metadata == {"attributes": {"n": 5, "arr": [True]}}
    assert payload.observations[1].parent_observation_id == "b7ad6b7169203331"


def test_partitioner_matches_kafkas_default() -> None:
    import random

    from aiokafka.partitioner import DefaultPartitioner

    from tally_shared.producer import partition

    rng = random.Random(7)
    parts = list(range(6))
    for n in range(0, 70):
        key = bytes(rng.randrange(256) for _ in range(n))
        assert partition(key, parts, parts) == DefaultPartitioner()(key, parts, parts)


def test_langfuse_dataset_run_item_links_the_trace_to_its_experiment() -> None:
    batch, report = langfuse.parse_batch([
        {"id": "e", "type": "dataset-run-item-create",
         "body": {"runName": "run-7", "datasetItemId": "item-3", "traceId": "t9", "datasetId": "ds-1"}},
        {"id": "bad", "type": "dataset-run-item-create", "body": {"runName": "run-7", "traceId": "t9"}},
    ], LIMIT)
    assert list(report.errors) == [1]
    [(_, payload)] = _decoded(batch)
    assert isinstance(payload, TraceIngested) and payload.trace is not None
    assert (payload.trace.dataset_run_name, payload.trace.dataset_item_id) == ("run-7", "item-3")
    assert payload.trace.dataset_id == "ds-1"
