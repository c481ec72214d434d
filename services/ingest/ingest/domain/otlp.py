"""OTLP/HTTP and OTLP/gRPC trace requests (protobuf or JSON) read into ``SpanView``s, one per span, with the
problems of each span reported per item. What a span means is ``ingest.domain.otel``'s business."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.domain import fields as f
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
        # Most attributes are non-empty strings, the next most integers (token counts): read them without asking
        # which kind the value is (a field of another kind reads as its default, "" or 0).
        out[kv.key] = v.string_value or v.int_value or _pb_value(v)
    return out


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Raises ``google.protobuf.message.DecodeError`` on bytes that are not the message."""
    return ExportTraceServiceRequest.FromString(body)


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def protobuf_spans(req: ExportTraceServiceRequest, report: Report, max_item_bytes: int | None) -> Iterator[SpanView]:
    # Each field read from a protobuf message builds a new Python object: every field is read once.
    ids = report.ids
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                span_id = sp.span_id.hex()
                # report.add, inline
                index = len(ids)
                ids.append(span_id or f"#{index}")
                if max_item_bytes is not None:
                    size = sp.ByteSize()
                    if size > max_item_bytes:
                        report.too_large(index, size, max_item_bytes)
                        continue
                trace_id = sp.trace_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    report.invalid(index, Invalid("traceId", "format", "must be 16 bytes, not all zero"))
                    continue
                if len(span_id) != 16 or span_id == "0000000000000000":
                    report.invalid(index, Invalid("spanId", "format", "must be 8 bytes, not all zero"))
                    continue
                parent_id = sp.parent_span_id
                parent = parent_id.hex() if len(parent_id) == 8 and parent_id != _ZERO_SPAN else None
                status = sp.status
                events = sp.events
                yield SpanView(
                    trace_id.hex(), span_id, parent, sp.name, sp.start_time_unix_nano, sp.end_time_unix_nano,
                    status.code, status.message, _pb_attrs(sp.attributes),
                    [(e.name, _pb_attrs(e.attributes)) for e in events] if events else [], resource,
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
