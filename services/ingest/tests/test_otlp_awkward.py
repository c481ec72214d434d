"""OTLP protobuf requests with awkward-but-valid attributes, through the whole domain path (decode, mapping, the
event bytes), and the per-shape caches the mapping keeps: spans of one key set share them, never their values."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.domain import otel
from ingest.domain.batch import Batch
from ingest.domain.conventions import draft
from ingest.domain.report import Report
from tally_shared.envelope import decode
from tally_shared.events import TraceIngested

TRACE = bytes(range(1, 17))


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(_value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=_value(x)) for k, x in v.items())
        return out
    return AnyValue(string_value=v)


def _request(spans: list[list[tuple[str, Any]]], resource: list[tuple[str, Any]] | None = None) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in resource or [])
    ss = rs.scope_spans.add()
    for i, attrs in enumerate(spans):
        sp = ss.spans.add()
        sp.trace_id = TRACE
        sp.span_id = (i + 1).to_bytes(8, "big")
        if i:
            sp.parent_span_id = (1).to_bytes(8, "big")
        sp.name = f"span-{i}"
        sp.start_time_unix_nano = 1_767_323_045_000_000_000 + i * 1_001_000
        sp.end_time_unix_nano = 1_767_323_046_000_000_000 - i
        sp.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs)
    return req.SerializeToString()


def _events(body: bytes, max_item_bytes: int | None = None) -> tuple[TraceIngested, Report]:
    batch, report = Batch("otel"), Report()
    otel.add_spans(batch, report, otel.protobuf_spans(otel.decode_protobuf(body), report, max_item_bytes))
    [message] = batch.outgoing("p1")
    _, payload = decode(message.value)
    assert isinstance(payload, TraceIngested)
    return payload, report


def test_unicode_keys_nested_values_and_duplicates_keep_their_order() -> None:
    attrs: list[tuple[str, Any]] = [
        ("ключ", "значение"), ("キー.値", "☃"), ("emoji.😀", "🎉"),
        ("nested", [1, [2.5, "x"], {"k": [True, b"\x00\xff"]}]), ("kv", {"a": {"b": {"c": "deep"}}, "ü": None}),
        ("dup", "first"), ("openinference.span.kind", "LLM"), ("dup", "second"), ("empty", ""),
    ]
    payload, report = _events(_request([attrs]))
    assert not report.errors
    [obs] = payload.observations
    assert obs.type == "GENERATION"
    assert obs.metadata is not None
    # Every attribute no convention reads is kept, in the span's order; a repeated key keeps its first place and
    # its last value; bytes are base64; an empty string stays an empty string.
    assert list(obs.metadata["attributes"].items()) == [
        ("ключ", "значение"), ("キー.値", "☃"), ("emoji.😀", "🎉"),
        ("nested", [1, [2.5, "x"], {"k": [True, "AP8="]}]), ("kv", {"a": {"b": {"c": "deep"}}, "ü": None}),
        ("dup", "second"), ("empty", ""),
    ]


def test_spans_of_one_shape_share_caches_but_not_values() -> None:
    # The same key set three times: token counts read through the per-shape key lists take each span's own values,
    # a value that is not a count stays an attribute of that span only.
    def llm(prompt: Any, completion: Any) -> list[tuple[str, Any]]:
        return [("llm.model_name", "m"), ("llm.token_count.prompt", prompt),
                ("llm.token_count.completion", completion), ("gen_ai.usage.input_tokens", 99),
                ("gen_ai.usage.total_tokens", "7"), ("gen_ai.request.temperature", 0.5),
                ("gen_ai.request.max_tokens", 10)]

    payload, _ = _events(_request([llm(1, 2), llm("lots", 4.5), llm(3, float("nan"))]))
    first, second, third = payload.observations
    assert first.usage_details == {"input": 1, "output": 2, "total": 7}
    assert first.model_parameters == {"temperature": 0.5, "max_tokens": 10}
    assert second.usage_details == {"output": 4.5, "input": 99, "total": 7}
    assert second.metadata == {"attributes": {"llm.token_count.prompt": "lots"}}
    assert third.usage_details == {"input": 3, "total": 7}
    assert third.metadata is not None and list(third.metadata["attributes"]) == ["llm.token_count.completion"]
    shape = draft.prefixes_of(dict(llm(1, 2)))
    assert shape["llm.token_count."] == ("llm.token_count.prompt", "llm.token_count.completion")
    assert shape["gen_ai.usage."] == ("gen_ai.usage.input_tokens", "gen_ai.usage.total_tokens")
    assert "langfuse." not in shape


def test_huge_values_within_the_bounds() -> None:
    big = "x" * 600_000
    resource = [("service.name", "svc")] + [(f"r{i}", "y" * 1000) for i in range(40)]
    payload, report = _events(_request([[("input.value", big), ("output.value", "ok")]], resource))
    assert not report.errors
    [obs] = payload.observations
    assert obs.input == big and obs.output == "ok"
    assert payload.trace is not None and payload.trace.metadata is not None
    kept = payload.trace.metadata["resourceAttributes"]
    # Resource attributes are bounded per trace (whole attributes, in order, until the budget is spent).
    assert list(kept)[:2] == ["service.name", "r0"]
    assert len(orjson.dumps(kept)) <= otel.MAX_RESOURCE_BYTES < len(orjson.dumps(dict(resource)))
    # A span over the item limit is refused on its own; the rest of the request goes through.
    body = _request([[("input.value", "small")], [("input.value", big)]])
    payload, report = _events(body, max_item_bytes=100_000)
    assert [i for i in report.errors] == [1] and report.errors[1][0] == 413
    assert [o.id for o in payload.observations] == [(1).to_bytes(8, "big").hex()]


def test_timestamps_keep_their_microseconds() -> None:
    payload, _ = _events(_request([[], []]))
    root, child = payload.observations
    assert root.start_time is not None and root.start_time.isoformat() == "2026-01-02T03:04:05+00:00"
    assert child.start_time is not None and child.start_time.isoformat() == "2026-01-02T03:04:05.001001+00:00"
    assert child.end_time is not None and child.end_time.isoformat() == "2026-01-02T03:04:05.999999+00:00"
