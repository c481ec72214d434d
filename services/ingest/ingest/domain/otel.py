"""OTLP traces (protobuf or JSON) mapped to Tally's traces and observations.

Attribute conventions understood, highest precedence first:
- Langfuse's own (``langfuse.*``, ``user.id``, ``session.id``), as the langfuse 5.x SDK sets them
  (``langfuse/_client/attributes.py``): observation type/input/output/level/status/model/usage/cost/metadata,
  trace name/tags/metadata/public/input/output, environment, release, version, experiment links;
- OpenInference (``openinference.span.kind``, ``input.value``, ``output.value``, ``llm.*``);
- OpenTelemetry GenAI semantic conventions (``gen_ai.*``), including the older flattened
  ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` and the span-event forms.

A span without a parent (or one the Langfuse SDK marked as the application's root) also describes its trace:
its name, start time, input and output become the trace's unless ``langfuse.trace.*`` says otherwise.
Attributes no convention claims are kept in the observation's ``metadata.attributes``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.domain import fields as f
from ingest.domain.batch import Batch
from ingest.domain.fields import Invalid
from ingest.domain.report import Report
from tally_shared import content

STATUS_ERROR = 2


@dataclass(slots=True)
class SpanView:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attrs: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]


# ---------------------------------------------------------------------------------------------------- decoding


def _pb_value(v: Any, kind: str | None = None) -> Any:
    kind = kind or v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return None


def _pb_attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        # Most attributes are non-empty strings: read them without asking which kind the value is.
        text = v.string_value
        out[kv.key] = text if text else _pb_value(v)
    return out


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Raises ``google.protobuf.message.DecodeError`` on bytes that are not the message."""
    return ExportTraceServiceRequest.FromString(body)


def protobuf_spans(req: ExportTraceServiceRequest, report: Report, max_item_bytes: int | None) -> Iterator[SpanView]:
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                span_id = sp.span_id.hex()
                index = report.add(span_id or f"#{len(report.ids)}")
                if max_item_bytes is not None:
                    size = sp.ByteSize()
                    if size > max_item_bytes:
                        report.too_large(index, size, max_item_bytes)
                        continue
                if len(sp.trace_id) != 16 or not any(sp.trace_id):
                    report.invalid(index, Invalid("traceId", "format", "must be 16 bytes, not all zero"))
                    continue
                if len(span_id) != 16 or span_id == "0000000000000000":
                    report.invalid(index, Invalid("spanId", "format", "must be 8 bytes, not all zero"))
                    continue
                parent = sp.parent_span_id.hex() if len(sp.parent_span_id) == 8 and any(sp.parent_span_id) else None
                yield SpanView(
                    sp.trace_id.hex(), span_id, parent, sp.name, sp.start_time_unix_nano,
                    sp.end_time_unix_nano, sp.status.code, sp.status.message, _pb_attrs(sp.attributes),
                    [(e.name, _pb_attrs(e.attributes)) for e in sp.events] if sp.events else [], resource,
                )


_JSON_KINDS = ("stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "bytesValue")


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    for kind in _JSON_KINDS:
        if kind in v:
            x = v[kind]
            if kind == "intValue":
                if isinstance(x, str):
                    try:
                        return int(x)
                    except ValueError:
                        return x
                return x
            if kind == "arrayValue":
                vals = x.get("values") if isinstance(x, dict) else None
                return [_json_value(i) for i in vals] if isinstance(vals, list) else []
            if kind == "kvlistValue":
                vals = x.get("values") if isinstance(x, dict) else None
                return _json_attrs(vals)
            return x
    return None


def _json_attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(kvs, list):
        for kv in kvs:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_id(field: str, v: Any, size: int) -> str:
    if isinstance(v, str):
        if len(v) == size * 2:
            try:
                raw = bytes.fromhex(v)
            except ValueError:
                raw = b""
        else:
            try:
                raw = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
        if len(raw) == size and any(raw):
            return raw.hex()
    raise Invalid(field, "format", f"must be {size * 2} hex digits, not all zero")


def _json_nanos(field: str, v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise Invalid(field, "type", "must be an integer (nanoseconds)") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise Invalid(field, "type", "must be an integer (nanoseconds)")


def _dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def json_spans(data: dict[str, Any], report: Report, max_item_bytes: int | None, *,
               clean: bool = False) -> Iterator[SpanView]:
    """``clean``: apply ``tally_shared.content.clean`` to each resource and span (see ``content.loads``)."""
    for rs in _dicts(data.get("resourceSpans")):
        res = rs.get("resource")
        if clean:
            res = content.clean(res, "resource")
        resource = _json_attrs(res.get("attributes")) if isinstance(res, dict) else {}
        for ss in _dicts(rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))):
            raw_spans = ss.get("spans")
            if not isinstance(raw_spans, list):
                continue
            for sp in raw_spans:
                sid = sp.get("spanId") if isinstance(sp, dict) else None
                if clean and isinstance(sid, str):
                    sid = content.clean_text(sid)
                index = report.add(sid if isinstance(sid, str) and sid else f"#{len(report.ids)}")
                if not isinstance(sp, dict):
                    report.invalid(index, Invalid("span", "type", "must be an object"))
                    continue
                if clean:
                    try:
                        sp = content.clean(sp, "span")
                    except content.Unrepresentable as exc:
                        report.invalid(index, Invalid(exc.path, exc.rule, exc.message))
                        continue
                    except RecursionError:
                        report.invalid(index, Invalid("span", "max_depth", "nested too deeply to store"))
                        continue
                if max_item_bytes is not None:
                    size = f.json_size(sp)
                    if size > max_item_bytes:
                        report.too_large(index, size, max_item_bytes)
                        continue
                try:
                    yield _json_span(sp, resource)
                except Invalid as exc:
                    report.invalid(index, exc)


def _json_span(sp: dict[str, Any], resource: dict[str, Any]) -> SpanView:
    trace_id = _json_id("traceId", sp.get("traceId"), 16)
    span_id = _json_id("spanId", sp.get("spanId"), 8)
    parent_raw = sp.get("parentSpanId")
    parent = _json_id("parentSpanId", parent_raw, 8) if parent_raw not in (None, "") else None
    raw_status = sp.get("status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    code = status.get("code", 0)
    if isinstance(code, str):
        code = STATUS_ERROR if code.upper().endswith("ERROR") else 0
    raw_message = status.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    name = sp.get("name")
    events: list[tuple[str, dict[str, Any]]] = []
    for e in _dicts(sp.get("events")):
        e_name = e.get("name")
        events.append((e_name if isinstance(e_name, str) else "", _json_attrs(e.get("attributes"))))
    return SpanView(
        trace_id, span_id, parent, name if isinstance(name, str) else "",
        _json_nanos("startTimeUnixNano", sp.get("startTimeUnixNano")),
        _json_nanos("endTimeUnixNano", sp.get("endTimeUnixNano")),
        code if isinstance(code, int) else 0, message, _json_attrs(sp.get("attributes")), events, resource,
    )


# ---------------------------------------------------------------------------------------------------- mapping

_MAX_NANOS = 253402300799 * 10**9  # 9999-12-31


def _time(field: str, ns: int) -> datetime | None:
    if ns <= 0:
        return None
    if ns > _MAX_NANOS:
        raise Invalid(field, "datetime", "is out of range")
    return datetime.fromtimestamp(ns / 1e9, UTC)


_SECONDS: dict[int, str] = {}


def _iso(field: str, ns: int) -> str | None:
    """``_time(...).isoformat()`` for span timestamps, cheaper: spans of a batch share their seconds."""
    if ns <= 0:
        return None
    if ns > _MAX_NANOS:
        raise Invalid(field, "datetime", "is out of range")
    sec, frac = divmod(ns, 1_000_000_000)
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    micros = frac // 1000
    return f"{head}.{micros:06d}+00:00" if micros else f"{head}+00:00"


def _maybe_json(v: Any) -> Any:
    """Input/output attributes: JSON text is decoded, any other string stays a string."""
    if isinstance(v, str) and v[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _json_or_str(v: Any) -> Any:
    """Metadata values: the 5.x SDK JSON-encodes every value (strings too); older ones sent strings as is."""
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _unflatten(items: list[tuple[str, Any]]) -> Any:
    """``[("0.role", "user"), ("0.content", "hi")]`` -> ``[{"role": "user", "content": "hi"}]``."""
    root: dict[str, Any] = {}
    for path, value in items:
        node = root
        # Bounded depth: attribute keys are untrusted and could nest thousands of levels.
        parts = path.split(".", 15)
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    conv = {k: _lists(v) for k, v in node.items()}
    if conv and all(k.isdigit() for k in conv):
        return [conv[k] for k in sorted(conv, key=int)]
    return conv


def _prefixed(a: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    keys = [k for k in a if k.startswith(prefix)]
    return [(k[len(prefix):], a.pop(k)) for k in keys]


_OPENINFERENCE_KINDS = {
    "LLM": "GENERATION", "EMBEDDING": "EMBEDDING", "CHAIN": "CHAIN", "RETRIEVER": "RETRIEVER", "AGENT": "AGENT",
    "TOOL": "TOOL", "GUARDRAIL": "GUARDRAIL", "EVALUATOR": "EVALUATOR", "RERANKER": "RETRIEVER",
}
_GENAI_OPERATIONS = {
    "chat": "GENERATION", "text_completion": "GENERATION", "generate_content": "GENERATION",
    "completion": "GENERATION", "embeddings": "EMBEDDING", "execute_tool": "TOOL", "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}
_GENAI_PARAMS = ("temperature", "max_tokens", "top_p", "top_k", "frequency_penalty", "presence_penalty",
                 "stop_sequences", "seed", "choice.count")
_USAGE_KEYS = {
    "gen_ai.usage.input_tokens": "input", "gen_ai.usage.prompt_tokens": "input",
    "gen_ai.usage.output_tokens": "output", "gen_ai.usage.completion_tokens": "output",
    "gen_ai.usage.total_tokens": "total",
    "llm.token_count.prompt": "input", "llm.token_count.completion": "output", "llm.token_count.total": "total",
}
_INPUT_KEYS = ("input.value", "gen_ai.input.messages", "gen_ai.prompt", "gen_ai.tool.call.arguments",
               "traceloop.entity.input", "mlflow.spanInputs", "input")
_OUTPUT_KEYS = ("output.value", "gen_ai.output.messages", "gen_ai.completion", "gen_ai.tool.call.result",
                "traceloop.entity.output", "mlflow.spanOutputs", "output")
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "model")
_DROP_KEYS = ("input.mime_type", "output.mime_type", "openinference.span.kind", "gen_ai.operation.name")


def _first(a: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    found, value = False, None
    for k in keys:
        if k in a:
            v = a.pop(k)
            if not found:
                found, value = True, v
    return found, value


def _conv(src: dict[str, Any], key: str, conv: f.Converter, left: dict[str, Any], decode: bool = False) -> Any:
    """Pop ``key`` (the caller knows it is there) and convert it with a field rule; a value that breaks the rule is
    kept as an attribute instead of failing the span (telemetry from arbitrary instrumentations is noisy)."""
    raw = src.pop(key)
    try:
        return conv(key, _json_or_str(raw) if decode else raw)
    except Invalid:
        left[key] = raw
        return None


_CONVENTION_PREFIXES = ("gen_ai.", "llm.")


def map_span(sp: SpanView) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(observation fields, trace fields or None) for one span."""
    # One pass splits Langfuse's attributes from the rest, so each convention below only looks where it can match.
    lf: dict[str, Any] = {}
    a: dict[str, Any] = {}
    conventions = False
    for k, v in sp.attrs.items():
        if k.startswith("langfuse."):
            lf[k] = v
        else:
            a[k] = v
            if not conventions and k.startswith(_CONVENTION_PREFIXES):
                conventions = True
    for e_name, e_attrs in sp.events:
        # Span-event forms of the GenAI conventions.
        if e_name == "gen_ai.content.prompt" and "gen_ai.prompt" in e_attrs:
            a.setdefault("gen_ai.prompt", e_attrs["gen_ai.prompt"])
        elif e_name == "gen_ai.content.completion" and "gen_ai.completion" in e_attrs:
            a.setdefault("gen_ai.completion", e_attrs["gen_ai.completion"])
    left: dict[str, Any] = {}
    start = _iso("startTimeUnixNano", sp.start_ns)
    end = _iso("endTimeUnixNano", sp.end_ns)
    obs: dict[str, Any] = {"id": sp.span_id, "trace_id": sp.trace_id, "name": sp.name}
    if start is not None:
        obs["start_time"] = start
    if end is not None:
        obs["end_time"] = end
    if sp.parent_id is not None:
        obs["parent_observation_id"] = sp.parent_id

    # Type
    obs_type = None
    if "langfuse.observation.type" in lf:
        obs_type = _conv(lf, "langfuse.observation.type", f.opt_observation_type, left)
    if obs_type is None:
        kind = a.get("openinference.span.kind")
        op = a.get("gen_ai.operation.name")
        if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_KINDS:
            obs_type = _OPENINFERENCE_KINDS[kind.upper()]
        elif isinstance(op, str) and op in _GENAI_OPERATIONS:
            obs_type = _GENAI_OPERATIONS[op]
        elif "gen_ai.request.model" in a or "gen_ai.response.model" in a or "llm.model_name" in a:
            obs_type = "GENERATION"
        else:
            obs_type = "SPAN"
    obs["type"] = obs_type

    # Input / output
    if "langfuse.observation.input" in lf:
        obs["input"] = _maybe_json(lf.pop("langfuse.observation.input"))
    if "langfuse.observation.output" in lf:
        obs["output"] = _maybe_json(lf.pop("langfuse.observation.output"))
    if a:
        found, value = _first(a, _INPUT_KEYS)
        if found:
            obs.setdefault("input", _maybe_json(value))
        elif conventions:
            msgs = _prefixed(a, "gen_ai.prompt.") or _prefixed(a, "llm.input_messages.")
            if msgs:
                obs.setdefault("input", _unflatten(msgs))
        found, value = _first(a, _OUTPUT_KEYS)
        if found:
            obs.setdefault("output", _maybe_json(value))
        elif conventions:
            msgs = _prefixed(a, "gen_ai.completion.") or _prefixed(a, "llm.output_messages.")
            if msgs:
                obs.setdefault("output", _unflatten(msgs))

    # Model, parameters, usage, cost
    model = None
    if "langfuse.observation.model.name" in lf:
        model = _conv(lf, "langfuse.observation.model.name", f.opt_str, left)
    if a:
        found, value = _first(a, _MODEL_KEYS)
        if model is None and found and isinstance(value, str):
            model = value
    if model is not None:
        obs["model"] = model
    params = None
    if "langfuse.observation.model.parameters" in lf:
        params = _conv(lf, "langfuse.observation.model.parameters", f.opt_object, left, decode=True)
    if params is None and conventions:
        inv = _conv(a, "llm.invocation_parameters", f.opt_object, left, decode=True) \
            if "llm.invocation_parameters" in a else None
        gen = {p: a.pop(f"gen_ai.request.{p}") for p in _GENAI_PARAMS if f"gen_ai.request.{p}" in a}
        if inv or gen:
            params = {**(inv or {}), **gen}
    if params is not None:
        obs["model_parameters"] = params
    usage = None
    if "langfuse.observation.usage_details" in lf:
        usage = _conv(lf, "langfuse.observation.usage_details", f.opt_numbers, left, decode=True)
    if usage is None and conventions:
        usage = _convention_usage(a, obs, left)
    if usage:
        obs["usage_details"] = usage
    if "langfuse.observation.cost_details" in lf:
        cost = _conv(lf, "langfuse.observation.cost_details", f.opt_numbers, left, decode=True)
        if cost:
            obs["cost_details"] = cost
    if "langfuse.observation.completion_start_time" in lf:
        cst = _conv(lf, "langfuse.observation.completion_start_time", f.opt_time, left, decode=True)
        if cst is not None:
            obs["completion_start_time"] = cst

    # Level and status
    level = _conv(lf, "langfuse.observation.level", f.opt_level, left) if "langfuse.observation.level" in lf \
        else None
    status_message = _conv(lf, "langfuse.observation.status_message", f.opt_text, left) \
        if "langfuse.observation.status_message" in lf else None
    if level is None and sp.status_code == STATUS_ERROR:
        level = "ERROR"
    if level is not None:
        obs["level"] = level
    if status_message is None and sp.status_message:
        status_message = sp.status_message
    if status_message is not None:
        obs["status_message"] = status_message

    # Environment, release, version
    env = _conv(lf, "langfuse.environment", f.opt_str, left) if "langfuse.environment" in lf else None
    if env is None:
        for k in ("deployment.environment.name", "deployment.environment"):
            v = sp.resource.get(k)
            if isinstance(v, str) and v:
                env = v
                break
    if env is not None:
        obs["environment"] = env
    release = _conv(lf, "langfuse.release", f.opt_str, left) if "langfuse.release" in lf else None
    if release is None and isinstance(sp.resource.get("langfuse.release"), str):
        release = sp.resource["langfuse.release"]
    if "langfuse.version" in lf:
        version = _conv(lf, "langfuse.version", f.opt_str, left)
        if version is not None:
            obs["version"] = version

    # Metadata (Langfuse's, whole or per key, and OpenInference's JSON text)
    metadata: dict[str, Any] = {}
    trace_metadata: dict[str, Any] = {}
    internal: dict[str, Any] = {}
    if lf:
        for k in list(lf):
            if k.startswith("langfuse.observation.metadata"):
                _metadata_attr(metadata, k, lf.pop(k), "langfuse.observation.metadata")
            elif k.startswith("langfuse.trace.metadata"):
                _metadata_attr(trace_metadata, k, lf.pop(k), "langfuse.trace.metadata")
            elif k.startswith("langfuse.internal."):
                internal[k] = lf.pop(k)
    if "metadata" in a and isinstance(a["metadata"], str):
        decoded = _json_or_str(a.pop("metadata"))
        if isinstance(decoded, dict):
            metadata.update(decoded)
        else:
            left["metadata"] = decoded

    _prompt(lf, obs, left)

    # Trace-level
    trace = _trace_fields(sp, a, lf, left, obs, start, internal)
    if trace_metadata:
        trace = trace if trace is not None else {"id": sp.trace_id}
        trace["metadata"] = trace_metadata
    if release is not None:
        trace = trace if trace is not None else {"id": sp.trace_id}
        trace["release"] = release
    trace = _resource_fields(sp, obs, trace, internal)
    if trace is not None and env is not None:
        trace.setdefault("environment", env)

    for k in _DROP_KEYS:
        a.pop(k, None)
    left.update(a)
    left.update(lf)
    if left:
        metadata["attributes"] = left
    if metadata:
        obs["metadata"] = metadata
    return obs, trace


def _prompt(lf: dict[str, Any], obs: dict[str, Any], left: dict[str, Any]) -> None:
    """The prompt a generation was made from, as the Langfuse SDKs link it (``langfuse.prompt.*``: older ones)."""
    for scope in ("langfuse.prompt.", "langfuse.observation.prompt."):
        if scope + "name" in lf:
            name = _conv(lf, scope + "name", f.opt_str, left)
            if name is not None:
                obs["prompt_name"] = name
        if scope + "version" in lf:
            version = _conv(lf, scope + "version", f.opt_prompt_version, left, decode=True)
            if version is not None:
                obs["prompt_version"] = version


# Resource attributes are shared by every span of a resource; each trace keeps a bounded copy.
MAX_RESOURCE_BYTES = 16 * 1024


def _resource_fields(sp: SpanView, obs: dict[str, Any], trace: dict[str, Any] | None,
                     internal: dict[str, Any]) -> dict[str, Any] | None:
    """Resource attributes, as Langfuse keeps them: all under the trace's ``metadata.resourceAttributes`` (from the
    root span, or from a span that sets trace metadata, which would otherwise replace them), ``service.version`` as
    the version when no ``langfuse.version`` says otherwise, ``deployment.environment`` as the environment (see
    ``map_span``; a span that is not the root still gives its trace that environment)."""
    res = sp.resource
    env = obs.get("environment")
    if env is not None and trace is None:
        trace = {"id": sp.trace_id}
    if not res:
        return trace
    version = res.get("service.version")
    if isinstance(version, str) and version:
        obs.setdefault("version", version)
    else:
        version = None
    is_root = sp.parent_id is None or internal.get("langfuse.internal.is_app_root") is True \
        or internal.get("langfuse.internal.as_root") is True
    if is_root or (trace is not None and "metadata" in trace):
        trace = trace if trace is not None else {"id": sp.trace_id}
        if is_root and version is not None:
            trace.setdefault("version", version)
        trace["metadata"] = {**(trace.get("metadata") or {}), "resourceAttributes": _bounded(res)}
    return trace


def _bounded(res: dict[str, Any]) -> dict[str, Any]:
    if f.json_size(res) <= MAX_RESOURCE_BYTES:
        return res
    kept: dict[str, Any] = {}
    budget = MAX_RESOURCE_BYTES
    for k, v in res.items():
        size = f.json_size({k: v})
        if size <= budget:
            kept[k] = v
            budget -= size
    return kept


def _metadata_attr(into: dict[str, Any], key: str, value: Any, prefix: str) -> None:
    if key == prefix:
        decoded = _json_or_str(value)
        into.update(decoded if isinstance(decoded, dict) else {"metadata": decoded})
    elif key[len(prefix)] == ".":
        into[key[len(prefix) + 1:]] = _json_or_str(value)
    else:
        into.setdefault("attributes", {})[key] = value


def _convention_usage(a: dict[str, Any], obs: dict[str, Any], left: dict[str, Any]) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for k in [k for k in a if k.startswith(("gen_ai.usage.", "llm.token_count."))]:
        v = a.pop(k)
        if isinstance(v, str):
            try:
                v = float(v) if "." in v else int(v)
            except ValueError:
                left[k] = v
                continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            if k == "gen_ai.usage.cost":
                obs.setdefault("cost_details", {})["total"] = v
            else:
                usage[_USAGE_KEYS.get(k, k.rsplit(".", 1)[-1])] = v
        else:
            left[k] = v
    return usage


_TRACE_IDENTITY = (("user.id", "user_id"), ("enduser.id", "user_id"), ("session.id", "session_id"),
                   ("gen_ai.conversation.id", "session_id"))
_LANGFUSE_IDENTITY = (("langfuse.user.id", "user_id"), ("langfuse.session.id", "session_id"))


def _trace_fields(sp: SpanView, a: dict[str, Any], lf: dict[str, Any], left: dict[str, Any], obs: dict[str, Any],
                  start: str | None, internal: dict[str, Any]) -> dict[str, Any] | None:
    trace: dict[str, Any] = {}
    is_root = sp.parent_id is None or internal.get("langfuse.internal.is_app_root") is True \
        or internal.get("langfuse.internal.as_root") is True
    if is_root:
        trace["name"] = sp.name
        if start is not None:
            trace["timestamp"] = start
        if "input" in obs:
            trace["input"] = obs["input"]
        if "output" in obs:
            trace["output"] = obs["output"]
        if "version" in obs:
            trace["version"] = obs["version"]
    if lf:
        if "langfuse.trace.name" in lf:
            name = _conv(lf, "langfuse.trace.name", f.opt_str, left)
            if name is not None:
                trace["name"] = name
        if "langfuse.trace.input" in lf:
            trace["input"] = _maybe_json(lf.pop("langfuse.trace.input"))
        if "langfuse.trace.output" in lf:
            trace["output"] = _maybe_json(lf.pop("langfuse.trace.output"))
        for key, target in _LANGFUSE_IDENTITY:
            if key in lf:
                v = _conv(lf, key, f.opt_str, left)
                if v is not None:
                    trace.setdefault(target, v)
        if "langfuse.trace.public" in lf:
            public = _conv(lf, "langfuse.trace.public", f.opt_bool, left, decode=True)
            if public is not None:
                trace["public"] = public
        if "langfuse.experiment.name" in lf:
            run = _conv(lf, "langfuse.experiment.name", f.opt_str, left)
            if run is not None:
                trace["dataset_run_name"] = run
        if "langfuse.experiment.item.id" in lf:
            item = _conv(lf, "langfuse.experiment.item.id", f.opt_str, left)
            if item is not None:
                trace["dataset_item_id"] = item
        if "langfuse.experiment.dataset.id" in lf:
            dataset = _conv(lf, "langfuse.experiment.dataset.id", f.opt_str, left)
            if dataset is not None:
                trace["dataset_id"] = dataset
    for key, target in _TRACE_IDENTITY:
        if key in a:
            v = _conv(a, key, f.opt_str, left)
            if v is not None:
                trace.setdefault(target, v)
    tags = lf.pop("langfuse.trace.tags", None)
    if tags is None:
        tags = a.pop("tag.tags", None)
    if isinstance(tags, str):
        tags = _json_or_str(tags)
        tags = tags if isinstance(tags, list) else [str(tags)]
    if isinstance(tags, list):
        trace["tags"] = [t if isinstance(t, str) else orjson.dumps(t).decode() for t in tags]
    if not trace:
        return None
    trace["id"] = sp.trace_id
    return trace


def add_spans(out: Batch, report: Report, spans: Iterator[SpanView]) -> None:
    # Trace metadata from several spans of one request is merged (a child's trace metadata and the root's resource
    # attributes), not replaced by the last span's.
    trace_metadata: dict[str, dict[str, Any]] = {}
    for sp in spans:
        index = len(report.ids) - 1
        try:
            obs, trace = map_span(sp)
        except Invalid as exc:
            report.invalid(index, exc)
            continue
        ns = sp.end_ns or sp.start_ns
        at = datetime.fromtimestamp(ns / 1e9, UTC) if 0 < ns <= _MAX_NANOS else None
        if trace is not None:
            if "metadata" in trace:
                earlier = trace_metadata.get(sp.trace_id)
                if earlier is not None:
                    trace["metadata"] = {**earlier, **trace["metadata"]}
                trace_metadata[sp.trace_id] = trace["metadata"]
            out.add_trace(index, trace, at)
        out.add_observation(index, obs, at)
