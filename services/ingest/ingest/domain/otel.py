"""OTLP spans mapped to Tally's traces and observations.

``ingest.domain.otlp`` reads a request into spans; each span's attributes are read by one mapper per convention
(``ingest.domain.conventions``, which states their order: Langfuse, OpenInference, GenAI, then the attributes
they share and other instrumentations'). What is left here is what the span itself says: ids, name, timestamps,
status (an error status is level ERROR), and its resource (environment, release, service version,
``metadata.resourceAttributes``).

A span without a parent (or one the Langfuse SDK marked as the application's root) also describes its trace:
its name, start time, input and output become the trace's unless ``langfuse.trace.*`` says otherwise.
Attributes no convention claims are kept in the observation's ``metadata.attributes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.domain import fields as f
from ingest.domain.batch import Batch
from ingest.domain.conventions import MAPPERS, Draft
from ingest.domain.conventions.draft import MISSING, json_or_str, prefixes_of
from ingest.domain.fields import Invalid
from ingest.domain.otlp import STATUS_ERROR, SpanView, decode_protobuf, json_spans, protobuf_spans
from ingest.domain.report import Report

__all__ = ["MAX_RESOURCE_BYTES", "SpanView", "add_spans", "decode_protobuf", "json_spans", "map_span",
           "protobuf_spans"]

_MAX_NANOS = 253402300799 * 10**9  # 9999-12-31
_SECONDS: dict[int, str] = {}


def _iso(field: str, ns: int) -> str | None:
    """``datetime.fromtimestamp(ns / 1e9, UTC).isoformat()`` at microseconds, cheaper: spans of a batch share
    their seconds."""
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
    # str(1000000 + micros)[1:]: the zero-padded micros, cheaper than a format spec.
    return f"{head}.{str(1_000_000 + micros)[1:]}+00:00" if micros else f"{head}+00:00"


def map_span(sp: SpanView, res: _Resource | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(observation fields, trace fields or None) for one span; ``res``: what its resource says, if known already.
    Takes the span's attributes: the mappers consume ``sp.attrs`` (what is left of it becomes the observation's
    ``metadata.attributes``)."""
    start = _iso("startTimeUnixNano", sp.start_ns)
    end = _iso("endTimeUnixNano", sp.end_ns)
    attrs = sp.attrs
    d = Draft(sp, attrs, prefixes_of(attrs))
    for mapper in MAPPERS:
        mapper(d)
    obs: dict[str, Any] = {"id": sp.span_id, "trace_id": sp.trace_id, "name": sp.name}
    if start is not None:
        obs["start_time"] = start
    if end is not None:
        obs["end_time"] = end
    if sp.parent_id is not None:
        obs["parent_observation_id"] = sp.parent_id
    obs["type"] = d.type or d.type_hint or "SPAN"
    if d.input is not MISSING:
        obs["input"] = d.input
    if d.output is not MISSING:
        obs["output"] = d.output
    if d.model is not None:
        obs["model"] = d.model
    if d.params is not None:
        obs["model_parameters"] = d.params
    if d.cost and d.cost_first:
        obs["cost_details"] = d.cost
    if d.usage:
        obs["usage_details"] = d.usage
    if d.cost and not d.cost_first:
        obs["cost_details"] = d.cost
    # Fields only Langfuse's attributes set (``conventions.langfuse``): their defaults unless it ran.
    lf = d.lf
    if lf and d.completion_start_time is not None:
        obs["completion_start_time"] = d.completion_start_time
    level = d.level if lf and d.level is not None else "ERROR" if sp.status_code == STATUS_ERROR else None
    if level is not None:
        obs["level"] = level
    status_message = d.status_message if lf and d.status_message is not None else sp.status_message or None
    if status_message is not None:
        obs["status_message"] = status_message
    if res is None:
        res = _Resource(sp.resource)
    env = d.environment if lf else None
    if env is None:
        env = res.environment
    if env is not None:
        obs["environment"] = env
    if lf:
        if d.version is not None:
            obs["version"] = d.version
        if d.prompt:
            obs.update(d.prompt)

    trace = _trace(sp, d, obs, start, res)
    if trace is not None and env is not None:
        trace.setdefault("environment", env)

    left = d.left
    rest = d.attrs
    if rest and lf:
        # Unclaimed attributes of other conventions first, then Langfuse's.
        langfuse = {}
        for k, v in rest.items():
            if k.startswith("langfuse."):
                langfuse[k] = v
            else:
                left[k] = v
        left.update(langfuse)
    elif not left:
        # What the mappers left of the span's own attributes, as it is (the usual case).
        left = rest
    else:
        left.update(rest)
    metadata = d.metadata
    if left:
        metadata["attributes"] = left
    if metadata:
        obs["metadata"] = metadata
    return obs, trace


def _trace(sp: SpanView, d: Draft, obs: dict[str, Any], start: str | None, res: _Resource) -> dict[str, Any] | None:
    trace: dict[str, Any] = {}
    # The fields only Langfuse's attributes set are read only when its mapper ran (``d.lf``).
    lf = d.lf
    is_root = sp.parent_id is None
    if not is_root and lf:
        internal = d.internal
        is_root = internal.get("langfuse.internal.is_app_root") is True \
            or internal.get("langfuse.internal.as_root") is True
    if is_root:
        trace["name"] = sp.name
        if start is not None:
            trace["timestamp"] = start
        if "input" in obs:
            trace["input"] = obs["input"]
        if "output" in obs:
            trace["output"] = obs["output"]
        if lf and d.version is not None:
            trace["version"] = d.version
    if lf:
        if d.trace_name is not None:
            trace["name"] = d.trace_name
        if d.trace_input is not MISSING:
            trace["input"] = d.trace_input
        if d.trace_output is not MISSING:
            trace["output"] = d.trace_output
        if d.trace_identity:
            trace.update(d.trace_identity)
        if d.public is not None:
            trace["public"] = d.public
        if d.experiment:
            trace.update(d.experiment)
    for k, v in d.identity.items():
        trace.setdefault(k, v)
    tags = d.tags
    if tags is not None:
        if isinstance(tags, str):
            tags = json_or_str(tags)
            tags = tags if isinstance(tags, list) else [str(tags)]
        if isinstance(tags, list):
            trace["tags"] = [t if isinstance(t, str) else orjson.dumps(t).decode() for t in tags]
    if trace:
        trace["id"] = sp.trace_id
    if lf and d.trace_metadata:
        trace["id"] = sp.trace_id
        trace["metadata"] = d.trace_metadata
    release = d.release if lf else None
    if release is None:
        release = res.release
    if release is not None:
        trace["id"] = sp.trace_id
        trace["release"] = release
    return _resource_fields(sp, obs, trace or None, is_root, res)


# Resource attributes are shared by every span of a resource; each trace keeps a bounded copy.
MAX_RESOURCE_BYTES = 16 * 1024


class _Resource:
    """What a resource's attributes say (its spans share them): ``environment`` (``deployment.environment``),
    ``version`` (``service.version``), ``release`` (``langfuse.release``), and the attributes as a trace keeps them
    (``bounded``; None for none)."""

    __slots__ = ("bounded", "environment", "release", "version")

    def __init__(self, attrs: dict[str, Any]) -> None:
        env = None
        for k in ("deployment.environment.name", "deployment.environment"):
            v = attrs.get(k)
            if isinstance(v, str) and v:
                env = v
                break
        self.environment: str | None = env
        version = attrs.get("service.version")
        self.version: str | None = version if isinstance(version, str) and version else None
        release = attrs.get("langfuse.release")
        self.release: str | None = release if isinstance(release, str) else None
        self.bounded: dict[str, Any] | None = _bounded(attrs) if attrs else None


def _resource_fields(sp: SpanView, obs: dict[str, Any], trace: dict[str, Any] | None,
                     is_root: bool, res: _Resource) -> dict[str, Any] | None:
    """Resource attributes, as Langfuse keeps them: all under the trace's ``metadata.resourceAttributes`` (from the
    root span, or from a span that sets trace metadata, which would otherwise replace them), ``service.version`` as
    the version when no ``langfuse.version`` says otherwise, ``deployment.environment`` as the environment (see
    ``map_span``; a span that is not the root still gives its trace that environment)."""
    if "environment" in obs and trace is None:
        trace = {"id": sp.trace_id}
    bounded = res.bounded
    if bounded is None:
        return trace
    version = res.version
    if version is not None:
        obs.setdefault("version", version)
    if is_root or (trace is not None and "metadata" in trace):
        trace = trace if trace is not None else {"id": sp.trace_id}
        if is_root and version is not None:
            trace.setdefault("version", version)
        trace["metadata"] = {**(trace.get("metadata") or {}), "resourceAttributes": bounded}
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


def add_spans(out: Batch, report: Report, spans: Iterator[SpanView]) -> None:
    # Trace metadata from several spans of one request is merged (a child's trace metadata and the root's resource
    # attributes), not replaced by the last span's.
    trace_metadata: dict[str, dict[str, Any]] = {}
    # A request's spans come in runs of one resource (one attributes dict each): what it says is read once a run.
    resource: dict[str, Any] | None = None
    res: _Resource | None = None
    for sp in spans:
        index = len(report.ids) - 1
        if sp.resource is not resource:
            resource, res = sp.resource, _Resource(sp.resource)
        try:
            obs, trace = map_span(sp, res)
        except Invalid as exc:
            report.invalid(index, exc)
            continue
        # The event time of a trace is its latest span's (end, else start; none out of range).
        ns = sp.end_ns or sp.start_ns
        if ns > _MAX_NANOS:
            ns = 0
        if trace is not None and "metadata" in trace:
            earlier = trace_metadata.get(sp.trace_id)
            if earlier is not None:
                trace["metadata"] = {**earlier, **trace["metadata"]}
            trace_metadata[sp.trace_id] = trace["metadata"]
        out.add_span(index, sp.trace_id, obs, trace, ns)
