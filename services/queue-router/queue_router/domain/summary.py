"""The router's per-trace summary: merging TraceIngested events (creates and partial updates) field by field.

Trace fields: a field present in an event is set, unless a later event (by ``occurred_at``) already set it.
Observations are kept in a compact per-observation state, so updating an observation replaces its cost, tokens,
level and times instead of adding them twice. The aggregates (error anywhere, latency, cost, tokens, types, names)
are recomputed from that state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from queue_router.domain.events import TRACE_FIELDS, observation_fields, trace_fields
from queue_router.domain.filters import ScoreView, TraceView
from tally_shared.events.traces import ObservationData, TraceData

_FIELD_INDEX = {name: i for i, name in enumerate(TRACE_FIELDS)}
_TAGS = _FIELD_INDEX["tags"]
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
    # {"f": [occurred_at epoch per TRACE_FIELDS], "o": {obs_id: [type, name, level, start, end, cost, input,
    #  output, total, occurred_at]}, "x": overflow aggregates}
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
        v = d.get(k)
        if v is not None:
            return float(v)
    return None


def _cost(d: dict[str, float] | None) -> float | None:
    if not d:
        return None
    total = d.get("total")
    if total is not None:
        return float(total)
    return float(sum(v for v in d.values() if v is not None))


# Per-observation state, a list (compact in the stored JSON, and no dict per observation while merging); a
# value not said yet is None, as an absent key was in the older dict form (``upgrade_state`` converts that).
_T, _N, _L, _S, _E, _C, _I, _U, _K, _AT = range(10)
_OBS_KEYS = ("t", "n", "l", "s", "e", "c", "i", "u", "k", "at")  # the older dict form's keys, in list order


def pack_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state as stored: per-field times that are all the same (a trace seen in one event, most of them) as
    ``"F": [time, bitmask of the fields set]`` instead of a list of that time repeated. ``state`` is not changed."""
    f = state.get("f")
    if not f:
        return state
    at = None
    mask = 0
    for i, t in enumerate(f):
        if t is None:
            continue
        if at is None:
            at = t
        elif t != at:
            return state
        mask |= 1 << i
    packed = {k: v for k, v in state.items() if k != "f"}
    packed["F"] = [at, mask]
    return packed


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """A stored state in the current form: per-field times as a list in ``TRACE_FIELDS`` order, observations as
    lists. Rows written before kept dicts; they are converted when read, and ``pack_state``'s form is unpacked."""
    packed = state.pop("F", None)
    if packed is not None:
        at, mask = packed
        state["f"] = [at if mask >> i & 1 else None for i in range(len(TRACE_FIELDS))]
    f = state.get("f")
    if isinstance(f, dict):
        state["f"] = [f.get(name) for name in TRACE_FIELDS]
    obs = state.get("o")
    if obs and isinstance(next(iter(obs.values())), dict):
        state["o"] = {k: [v.get(key) for key in _OBS_KEYS] for k, v in obs.items()}
    return state


def apply_trace(s: Summary, data: Mapping[str, Any] | TraceData, at: float) -> None:
    """``data``: the trace fields an event said (``domain.events``' form; a ``TraceData`` is converted)."""
    if not isinstance(data, dict):
        data = trace_fields(cast(TraceData, data))
    s.has_trace = True
    state = s.state
    ts: list[float | None] | None = state.get("f")
    if ts is None:
        ts = state["f"] = [None] * len(TRACE_FIELDS)
    index = _FIELD_INDEX
    for name, value in data.items():
        i = index.get(name)
        if i is None:
            continue
        prev = ts[i]
        if prev is not None and prev > at:
            continue
        if i == _TAGS and value is not None:
            # validated as a list of strings by either decoder
            value = list(dict.fromkeys(value))[:MAX_NAMES]
        setattr(s, name, value)
        ts[i] = at


def apply_observation(s: Summary, o: Mapping[str, Any] | ObservationData, at: float) -> None:
    """``o``: an observation's id and the fields an event said of it (``domain.events``' form; an
    ``ObservationData`` is converted)."""
    if not isinstance(o, dict):
        o = observation_fields(cast(ObservationData, o))
    obs: dict[str, list[Any]] | None = s.state.get("o")
    if obs is None:
        obs = s.state["o"] = {}
    oid = o["id"]
    cur = obs.get(oid)
    if cur is None:
        if len(obs) >= MAX_TRACKED_OBSERVATIONS:
            _overflow(s, o)
        else:
            obs[oid] = _first_sighting(o, at)
        return
    prev_at = cur[_AT]
    newer = prev_at is None or at >= prev_at

    def put(i: int, value: Any) -> None:
        if newer or cur[i] is None:
            cur[i] = value

    if "type" in o:
        put(_T, o["type"])
    if "name" in o:
        put(_N, o["name"])
    if "level" in o:
        put(_L, o["level"])
    if "start_time" in o:
        put(_S, o["start_time"])
    if "end_time" in o:
        put(_E, o["end_time"])
    if "cost_details" in o:
        put(_C, _cost(o["cost_details"]))
    if "usage_details" in o:
        usage = o["usage_details"]
        put(_I, _first(usage, _INPUT_KEYS))
        put(_U, _first(usage, _OUTPUT_KEYS))
        total = _first(usage, _TOTAL_KEYS)
        if total is None and usage:
            parts = [x for x in (cur[_I], cur[_U]) if x is not None]
            total = float(sum(parts)) if parts else None
        put(_K, total)
    if newer:
        cur[_AT] = at


def _first_sighting(o: Mapping[str, Any], at: float) -> list[Any]:
    """``apply_observation`` for an observation not seen before (most of them). A field not said is None, as
    a field said as null."""
    get = o.get
    usage, cost = get("usage_details"), get("cost_details")
    i = u = k = None
    if usage:
        # the usual keys first, without a loop
        i = usage.get("input")
        i = float(i) if i is not None else _first(usage, _INPUT_KEYS)
        u = usage.get("output")
        u = float(u) if u is not None else _first(usage, _OUTPUT_KEYS)
        k = _first(usage, _TOTAL_KEYS)
        if k is None and (i is not None or u is not None):
            k = (i or 0.0) + (u or 0.0)
    c = None
    if cost:
        c = cost.get("total")
        c = float(c) if c is not None else _cost(cost)
    return [get("type"), get("name"), get("level"), get("start_time"), get("end_time"), c, i, u, k, at]


def _overflow(s: Summary, o: Mapping[str, Any]) -> None:
    x: dict[str, Any] = s.state.setdefault("x", {})
    if o.get("level") == "ERROR":
        x["l"] = True
    usage, cost = o.get("usage_details"), o.get("cost_details")
    for key, value in (("c", _cost(cost)), ("i", _first(usage, _INPUT_KEYS)),
                       ("u", _first(usage, _OUTPUT_KEYS)), ("k", _first(usage, _TOTAL_KEYS))):
        if value is not None:
            x[key] = x.get(key, 0.0) + value
    t, name = o.get("type"), o.get("name")
    if t is not None:
        x.setdefault("t", [])
        if t not in x["t"]:
            x["t"].append(t)
    if name is not None and len(x.setdefault("n", [])) < MAX_NAMES and name not in x["n"]:
        x["n"].append(name)


def recompute(s: Summary) -> None:
    """Aggregates from the per-observation state (called once per trace per batch)."""
    obs: dict[str, list[Any]] = s.state.get("o") or {}
    x: dict[str, Any] = s.state.get("x") or {}
    has_error = bool(x.get("l"))
    types: dict[str, None] = dict.fromkeys(x.get("t", ()))
    names: dict[str, None] = dict.fromkeys(x.get("n", ()))
    start = end = None
    c, i, u, k = x.get("c"), x.get("i"), x.get("u"), x.get("k")
    for o in obs.values():
        t, n, lv, st, en, oc, oi, ou, ok, _ = o
        if lv == "ERROR":
            has_error = True
        if t:
            types[t] = None
        if n and len(names) < MAX_NAMES:
            names[n] = None
        if st is not None:
            if start is None or st < start:
                start = st
            last = en if en is not None else st
            if end is None or last > end:
                end = last
        if oc is not None:
            c = oc if c is None else c + oc
        if oi is not None:
            i = oi if i is None else i + oi
        if ou is not None:
            u = ou if u is None else u + ou
        if ok is not None:
            k = ok if k is None else k + ok
    s.has_error = has_error
    s.observation_types = sorted(types)
    s.observation_names = list(names)
    s.latency = (end - start) if start is not None and end is not None else None
    s.total_cost = c
    s.input_tokens = i
    s.output_tokens = u
    s.total_tokens = k
