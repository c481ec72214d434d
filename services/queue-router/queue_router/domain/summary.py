"""The router's per-trace summary: merging TraceIngested events (creates and partial updates) field by field.

Trace fields: a field present in an event is set, unless a later event (by ``occurred_at``) already set it.
Observations are kept in a compact per-observation state, so updating an observation replaces its cost, tokens,
level and times instead of adding them twice. The aggregates (error anywhere, latency, cost, tokens, types, names)
are recomputed from that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from queue_router.domain.events import RoutedObservation, RoutedTrace
from queue_router.domain.filters import ScoreView, TraceView
from tally_shared.events.traces import ObservationData, TraceData

TRACE_FIELDS = ("name", "timestamp", "metadata", "tags", "user_id", "session_id", "release", "environment",
                "dataset_run_name")
_TRACE_FIELD_SET = frozenset(TRACE_FIELDS)
# A trace with more observations than this keeps aggregating but stops keeping per-observation state for new
# ones (their later updates then add instead of replace); it bounds the summary row.
MAX_TRACKED_OBSERVATIONS = 2000
MAX_NAMES = 200

_INPUT_KEYS = ("input", "prompt_tokens", "promptTokens", "input_tokens")
_OUTPUT_KEYS = ("output", "completion_tokens", "completionTokens", "output_tokens")
_TOTAL_KEYS = ("total", "total_tokens", "totalTokens")


@dataclass
class Summary:
    project_id: str
    trace_id: str
    has_trace: bool = False
    name: str | None = None
    timestamp: datetime | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    environment: str | None = None
    release: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    dataset_run_name: str | None = None
    has_error: bool = False
    latency: float | None = None
    total_cost: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    total_tokens: float | None = None
    observation_types: list[str] = field(default_factory=list)
    observation_names: list[str] = field(default_factory=list)
    # {"f": {field: occurred_at epoch}, "o": {obs_id: compact}, "x": overflow aggregates}
    state: dict[str, Any] = field(default_factory=dict)

    def view(self, scores: list[ScoreView] | None = None) -> TraceView:
        return TraceView(
            trace_id=self.trace_id, name=self.name, environment=self.environment, release=self.release,
            user_id=self.user_id, session_id=self.session_id, dataset_run_name=self.dataset_run_name,
            tags=self.tags or (), observation_types=self.observation_types,
            observation_names=self.observation_names, latency=self.latency, total_cost=self.total_cost,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens, total_tokens=self.total_tokens,
            has_error=self.has_error, metadata=self.metadata, scores=scores or (),
        )


def _first(d: dict[str, float] | None, keys: tuple[str, ...]) -> float | None:
    if not d:
        return None
    for k in keys:
        if k in d and d[k] is not None:
            return float(d[k])
    return None


def _cost(d: dict[str, float] | None) -> float | None:
    if not d:
        return None
    if "total" in d and d["total"] is not None:
        return float(d["total"])
    return float(sum(v for v in d.values() if v is not None))


def apply_trace(s: Summary, data: TraceData | RoutedTrace, at: float) -> None:
    s.has_trace = True
    ts: dict[str, float] = s.state.setdefault("f", {})
    for name in data.model_fields_set & _TRACE_FIELD_SET:
        if ts.get(name, float("-inf")) > at:
            continue
        value = getattr(data, name)
        if name == "tags" and value is not None:
            value = list(dict.fromkeys(str(t) for t in value))[:MAX_NAMES]
        setattr(s, name, value)
        ts[name] = at


def apply_observation(s: Summary, o: ObservationData | RoutedObservation, at: float) -> None:
    obs: dict[str, dict[str, Any]] = s.state.setdefault("o", {})
    cur = obs.get(o.id)
    if cur is None:
        if len(obs) >= MAX_TRACKED_OBSERVATIONS:
            _overflow(s, o)
        else:
            obs[o.id] = _first_sighting(o, at)
        return
    newer = at >= cur.get("at", float("-inf"))
    fields = o.model_fields_set

    def put(key: str, value: Any) -> None:
        if newer or cur.get(key) is None:
            cur[key] = value

    if "type" in fields:
        put("t", o.type.value if o.type else None)
    if "name" in fields:
        put("n", o.name)
    if "level" in fields:
        put("l", o.level.value if o.level else None)
    if "start_time" in fields:
        put("s", o.start_time.timestamp() if o.start_time else None)
    if "end_time" in fields:
        put("e", o.end_time.timestamp() if o.end_time else None)
    if "cost_details" in fields:
        put("c", _cost(o.cost_details))
    if "usage_details" in fields:
        put("i", _first(o.usage_details, _INPUT_KEYS))
        put("u", _first(o.usage_details, _OUTPUT_KEYS))
        total = _first(o.usage_details, _TOTAL_KEYS)
        if total is None and o.usage_details:
            parts = [x for x in (cur.get("i"), cur.get("u")) if x is not None]
            total = float(sum(parts)) if parts else None
        put("k", total)
    if newer:
        cur["at"] = at


def _first_sighting(o: ObservationData | RoutedObservation, at: float) -> dict[str, Any]:
    """``apply_observation`` for an observation not seen before (most of them): every field said is taken."""
    fields = o.model_fields_set
    cur: dict[str, Any] = {}
    if "type" in fields:
        cur["t"] = o.type.value if o.type else None
    if "name" in fields:
        cur["n"] = o.name
    if "level" in fields:
        cur["l"] = o.level.value if o.level else None
    if "start_time" in fields:
        cur["s"] = o.start_time.timestamp() if o.start_time else None
    if "end_time" in fields:
        cur["e"] = o.end_time.timestamp() if o.end_time else None
    if "cost_details" in fields:
        cur["c"] = _cost(o.cost_details)
    if "usage_details" in fields:
        usage = o.usage_details
        i = cur["i"] = _first(usage, _INPUT_KEYS)
        u = cur["u"] = _first(usage, _OUTPUT_KEYS)
        total = _first(usage, _TOTAL_KEYS)
        if total is None and usage:
            parts = [x for x in (i, u) if x is not None]
            total = float(sum(parts)) if parts else None
        cur["k"] = total
    cur["at"] = at
    return cur


def _overflow(s: Summary, o: ObservationData | RoutedObservation) -> None:
    x: dict[str, Any] = s.state.setdefault("x", {})
    if o.level is not None and o.level.value == "ERROR":
        x["l"] = True
    for key, value in (("c", _cost(o.cost_details)), ("i", _first(o.usage_details, _INPUT_KEYS)),
                       ("u", _first(o.usage_details, _OUTPUT_KEYS)), ("k", _first(o.usage_details, _TOTAL_KEYS))):
        if value is not None:
            x[key] = x.get(key, 0.0) + value
    if o.type is not None:
        x.setdefault("t", [])
        if o.type.value not in x["t"]:
            x["t"].append(o.type.value)
    if o.name is not None and len(x.setdefault("n", [])) < MAX_NAMES and o.name not in x["n"]:
        x["n"].append(o.name)


def recompute(s: Summary) -> None:
    """Aggregates from the per-observation state (called once per trace per batch)."""
    obs: dict[str, dict[str, Any]] = s.state.get("o", {})
    x: dict[str, Any] = s.state.get("x", {})
    has_error = bool(x.get("l"))
    types: dict[str, None] = dict.fromkeys(x.get("t", ()))
    names: dict[str, None] = dict.fromkeys(x.get("n", ()))
    start = end = None
    sums: dict[str, float | None] = {"c": x.get("c"), "i": x.get("i"), "u": x.get("u"), "k": x.get("k")}
    for o in obs.values():
        if o.get("l") == "ERROR":
            has_error = True
        if o.get("t"):
            types[o["t"]] = None
        if o.get("n") and len(names) < MAX_NAMES:
            names[o["n"]] = None
        st, en = o.get("s"), o.get("e")
        if st is not None:
            start = st if start is None else min(start, st)
            last = en if en is not None else st
            end = last if end is None else max(end, last)
        for key in ("c", "i", "u", "k"):
            v = o.get(key)
            if v is not None:
                cur = sums[key]
                sums[key] = v if cur is None else cur + v
    s.has_error = has_error
    s.observation_types = sorted(types)
    s.observation_names = list(names)
    s.latency = (end - start) if start is not None and end is not None else None
    s.total_cost = sums["c"]
    s.input_tokens = sums["i"]
    s.output_tokens = sums["u"]
    s.total_tokens = sums["k"]
