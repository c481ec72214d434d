"""A seeded corpus of OTLP trace requests (protobuf and JSON) covering every attribute the convention mappers read,
with awkward values (every AnyValue kind, nested arrays and kvlists, JSON text that is and is not valid, unicode
and NUL, duplicate keys, huge values, bad ids, span events), and a digest of what ingest makes of each: the
outgoing messages byte for byte and the per-span report. Recording the digests before a change to the OTLP path
and checking them after shows the events are unchanged.

    .venv/bin/python bench/otlp_corpus.py record /tmp/otlp-golden.pickle [--requests 3000]
    .venv/bin/python bench/otlp_corpus.py check /tmp/otlp-golden.pickle
"""

# ruff: noqa: E402  (the path is fixed before the ingest imports)
from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# bench/ is not a package; its ingest.py would shadow the ingest service package if left on the path.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.domain import otel
from ingest.domain.batch import Batch
from ingest.domain.report import Report

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

KEYS = [
    # Langfuse
    "langfuse.observation.type", "langfuse.observation.input", "langfuse.observation.output",
    "langfuse.observation.model.name", "langfuse.observation.model.parameters", "langfuse.observation.usage_details",
    "langfuse.observation.cost_details", "langfuse.observation.completion_start_time", "langfuse.observation.level",
    "langfuse.observation.status_message", "langfuse.environment", "langfuse.release", "langfuse.version",
    "langfuse.observation.metadata", "langfuse.observation.metadata.a", "langfuse.observation.metadata.b.c",
    "langfuse.observation.metadataX", "langfuse.trace.metadata", "langfuse.trace.metadata.k",
    "langfuse.trace.metadataZ", "langfuse.internal.is_app_root", "langfuse.internal.as_root",
    "langfuse.internal.other", "langfuse.prompt.name", "langfuse.prompt.version", "langfuse.observation.prompt.name",
    "langfuse.observation.prompt.version", "langfuse.trace.name", "langfuse.trace.input", "langfuse.trace.output",
    "langfuse.user.id", "langfuse.session.id", "langfuse.trace.public", "langfuse.experiment.name",
    "langfuse.experiment.item.id", "langfuse.experiment.dataset.id", "langfuse.trace.tags", "langfuse.unknown",
    "langfuse.", "langfuse",
    # OpenInference
    "openinference.span.kind", "input.mime_type", "output.mime_type", "input.value", "output.value",
    "llm.input_messages.0.message.role", "llm.input_messages.0.message.content", "llm.input_messages.1.message.role",
    "llm.input_messages.1.message.contents.0.message_content.text", "llm.input_messages.10.message.role",
    "llm.output_messages.0.message.role", "llm.output_messages.0.message.content", "llm.output_messages.x",
    "llm.model_name", "llm.provider", "llm.invocation_parameters", "llm.token_count.prompt",
    "llm.token_count.completion", "llm.token_count.total", "llm.token_count.prompt_details.cache_read",
    "metadata", "tag.tags", "llm.", "llm",
    # GenAI
    "gen_ai.operation.name", "gen_ai.input.messages", "gen_ai.prompt", "gen_ai.tool.call.arguments",
    "gen_ai.output.messages", "gen_ai.completion", "gen_ai.tool.call.result", "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content", "gen_ai.prompt.1.content", "gen_ai.completion.0.role", "gen_ai.completion.0.content",
    "gen_ai.response.model", "gen_ai.request.model", "gen_ai.request.temperature", "gen_ai.request.max_tokens",
    "gen_ai.request.top_p", "gen_ai.request.top_k", "gen_ai.request.frequency_penalty",
    "gen_ai.request.presence_penalty", "gen_ai.request.stop_sequences", "gen_ai.request.seed",
    "gen_ai.request.choice.count", "gen_ai.request.other", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "gen_ai.usage.total_tokens",
    "gen_ai.usage.cost", "gen_ai.usage.reasoning_tokens", "gen_ai.system", "gen_ai.tool.name", "gen_ai.re",
    "gen_ai.conversation.id", "gen_ai.", "gen_ai.promptX", "gen_ai.completionX",
    # shared and others
    "user.id", "enduser.id", "session.id", "traceloop.entity.input", "traceloop.entity.output", "mlflow.spanInputs",
    "mlflow.spanOutputs", "mlflow.spanType", "input", "output", "model", "tool.name",
    "retrieval.documents.0.document.id",
    "http.method", "nul\u0000key", "ключ", "キー.値", "emoji.😀", "", "a" * 300, "dup",
]
RESOURCE_KEYS = ["service.name", "service.version", "deployment.environment", "deployment.environment.name",
                 "langfuse.release", "telemetry.sdk.name", "host.name", "big"]
EVENT_NAMES = ["gen_ai.content.prompt", "gen_ai.content.completion", "exception", "log", ""]
EVENT_KEYS = ["gen_ai.prompt", "gen_ai.completion", "exception.message", "x"]
TYPES = ["span", "generation", "event", "agent", "tool", "chain", "retriever", "evaluator", "embedding",
         "guardrail", "GENERATION", "bogus", "LLM", "CHAIN", "llm", "RERANKER", "chat", "embeddings", "execute_tool"]
LEVELS = ["DEBUG", "default", "WARNING", "error", "loud"]


def _text(r: random.Random) -> str:
    kind = r.randrange(12)
    if kind == 0:
        return ""
    if kind == 1:
        return "x" * (300_000 if r.random() < 0.01 else r.choice([1, 100, 5000]))
    if kind == 2:
        return "naïve ☃ 😀 \u0000 nul \U0001f600x"[: r.randrange(1, 20)]
    if kind == 3:
        return orjson.dumps({"messages": [{"role": "user", "content": "hi " * r.randrange(5)}], "n": 1.5}).decode()
    if kind == 4:
        return orjson.dumps([1, "two", {"three": [None, True]}]).decode()
    if kind == 5:
        return '"quoted"'
    if kind == 6:
        return "{not json"
    if kind == 7:
        return str(r.randrange(-5, 10**6))
    if kind == 8:
        return f"{r.random() * 100:.3f}"
    if kind == 9:
        return r.choice(TYPES + LEVELS)
    if kind == 10:
        return r.choice(["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456+02:00", "yesterday", "1767323045000"])
    return orjson.dumps(r.choice([{"a": 1, "b": {"c": [1, 2]}}, {"input": 3, "output": "4"}, ["t1", "t2"],
                                  {"prompt_tokens": 3, "completion_tokens_details": {"reasoning": 2}}, 7, None,
                                  "s", {"temperature": 0.1}])).decode()


def _value(r: random.Random, depth: int = 0) -> AnyValue:
    kind = r.randrange(14 if depth < 3 else 8)
    if kind < 5:
        return AnyValue(string_value=_text(r))
    if kind == 5:
        return AnyValue(int_value=r.choice([0, 1, -1, 812, 2**62, -(2**63)]))
    if kind == 6:
        return AnyValue(double_value=r.choice([0.0, 0.2, -1.5, 1e300, float("inf"), float("nan")]))
    if kind == 7:
        return AnyValue(bool_value=r.random() < 0.5)
    if kind in (8, 9):
        v = AnyValue()
        v.array_value.values.extend(_value(r, depth + 1) for _ in range(r.randrange(4)))
        return v
    if kind in (10, 11):
        v = AnyValue()
        v.kvlist_value.values.extend(KeyValue(key=r.choice([*EVENT_KEYS, "k", "ü"]), value=_value(r, depth + 1))
                                     for _ in range(r.randrange(4)))
        return v
    if kind == 12:
        return AnyValue(bytes_value=bytes(r.randrange(256) for _ in range(r.randrange(6))))
    return AnyValue()  # no value set


def _attrs(r: random.Random, keys: list[str], n: int) -> list[KeyValue]:
    out = []
    for _ in range(n):
        k = r.choice(keys)
        out.append(KeyValue(key=k, value=_value(r)))
        if r.random() < 0.05:
            out.append(KeyValue(key=k, value=_value(r)))  # duplicate key
    return out


def _id(r: random.Random, size: int) -> bytes:
    roll = r.random()
    if roll < 0.02:
        return bytes(size)
    if roll < 0.04:
        return bytes(r.randrange(256) for _ in range(size - 1))
    return bytes(r.randrange(256) for _ in range(size))


def random_request(r: random.Random) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(r.choice([1, 1, 1, 2])):
        rs = req.resource_spans.add()
        if r.random() < 0.8:
            rs.resource.attributes.extend(_attrs(r, RESOURCE_KEYS, r.randrange(6)))
        for _ in range(r.choice([1, 1, 2])):
            ss = rs.scope_spans.add()
            ss.scope.name = r.choice(["langfuse-sdk", "openinference", "x"])
            traces = [_id(r, 16) for _ in range(r.randrange(1, 4))]
            for _ in range(r.randrange(1, 9)):
                sp = ss.spans.add()
                sp.trace_id = r.choice(traces)
                sp.span_id = _id(r, 8)
                if r.random() < 0.6:
                    sp.parent_span_id = _id(r, 8)
                sp.name = r.choice(["root", "llm", "", "naïve ☃", "x" * 5000])
                if r.random() < 0.95:
                    sp.start_time_unix_nano = r.choice([1_767_323_045_123_456_789, 1_767_323_045_000_000_000,
                                                        1_767_323_000_000_000_001, 0, 2**63 + 5])
                    sp.end_time_unix_nano = sp.start_time_unix_nano + r.choice([0, 1000, 2_500_000_000])
                if r.random() < 0.3:
                    sp.status.code = r.choice([0, 1, 2])
                    sp.status.message = r.choice(["", "boom", "ошибка"])
                sp.attributes.extend(_attrs(r, KEYS, r.randrange(0, 25)))
                for _ in range(r.choice([0, 0, 0, 1, 2])):
                    ev = sp.events.add()
                    ev.name = r.choice(EVENT_NAMES)
                    ev.attributes.extend(_attrs(r, EVENT_KEYS, r.randrange(3)))
    return req


def digest(body: bytes, is_json: bool, limit: int | None) -> Any:
    batch = Batch("otel")
    report = Report()
    if is_json:
        data, clean = __import__("tally_shared.content", fromlist=["loads"]).loads(body)
        try:
            otel.add_spans(batch, report, otel.json_spans(data, report, limit, clean=clean))
        except Exception as exc:  # the kind of failure is part of the digest
            return ("raised", type(exc).__name__, str(exc))
    else:
        try:
            req = otel.decode_protobuf(body)
        except Exception as exc:
            return ("raised", type(exc).__name__)
        otel.add_spans(batch, report, otel.protobuf_spans(req, report, limit))
    out = [(m.topic, m.key, m.value, m.event_type, m.items, m.error) for m in batch.outgoing("proj-1", NOW)]
    return (out, report.ids, sorted(report.errors.items()), sorted(report.reasons.items()))


def bodies(n: int, seed: int = 11) -> list[tuple[bytes, bool, int | None]]:
    r = random.Random(seed)
    out = []
    sys.path.insert(0, str(BENCH))
    import pipeline

    sys.path.pop(0)
    # The bench's request template, made deterministic (its ids and clock).
    pipeline.os = SimpleNamespace(urandom=r.randbytes)  # type: ignore[assignment]
    pipeline.time = SimpleNamespace(time_ns=lambda: 1_767_323_045_000_000_000)  # type: ignore[assignment]
    tpl = pipeline.build_template(b"abcd", "agent-x-01-plain", "agent-x-01-route")
    for k in range(3):
        out.append((tpl.body(k), False, None))
    for _ in range(n):
        req = random_request(r)
        raw = req.SerializeToString()
        limit = r.choice([None, None, 2000, 200_000])
        out.append((raw, False, limit))
        if r.random() < 0.3:
            try:
                js = orjson.dumps(MessageToDict(req))
            except (ValueError, TypeError, orjson.JSONEncodeError):
                continue
            out.append((js, True, limit))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["record", "check"])
    p.add_argument("path", type=Path)
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args(argv)
    items = bodies(args.requests)
    results = [digest(b, j, lim) for b, j, lim in items]
    if args.mode == "record":
        args.path.write_bytes(pickle.dumps(results))
        h = hashlib.sha256(pickle.dumps(results)).hexdigest()[:16]
        print(f"recorded {len(results)} requests ({h})")
        return 0
    expected = pickle.loads(args.path.read_bytes())
    bad = [i for i, (a, b) in enumerate(zip(results, expected, strict=True)) if a != b]
    print(f"{len(results)} requests, {len(bad)} differ" + (f": first {bad[:10]}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
