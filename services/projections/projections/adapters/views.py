"""Row -> response shapes: Langfuse's public API shapes (camelCase) and Tallys native ones (snake_case)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from tally_shared.content import loads_stored


class RawJSON:
    """A stored input or output: its JSON text (``tables.JsonText``), written into an answer as it is
    (``fragment``), never parsed and written again."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def fragment(self) -> orjson.Fragment:
        return orjson.Fragment(self.raw)

    def value(self) -> Any:
        """The parsed value, for a writer that cannot embed text."""
        return loads_stored(self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"RawJSON({self.raw!r})"


def _converted(raw: bytes) -> bool:
    """Text converted from jsonb by migration 0011 starts with a space (what orjson never writes): jsonb printed
    1e308 as 309 digits, so such values are read as they were before, parsed as doubles (``loads_stored``)."""
    return raw[:1] == b" "


def raw_json(v: Any) -> Any:
    """A stored input or output as an answer holds it: the stored text wrapped (``RawJSON``), anything else
    (None, or a value a store other than PostgreSQL holds parsed) as it is."""
    if type(v) is bytes:
        return RawJSON(v) if not _converted(v) else loads_stored(v)
    return v


def json_fragment(v: bytes | None) -> Any:
    """A stored input or output for orjson without a ``default``: the stored text as an ``orjson.Fragment``."""
    if v is None:
        return None
    return orjson.Fragment(v) if not _converted(v) else loads_stored(v)


def latency_and_cost(obs: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    """Latency in seconds (first start to last end over the observations) and total cost in USD."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    cost = 0.0
    for o in obs:
        if o.get("start_time") is not None:
            starts.append(o["start_time"])
        end = o.get("end_time") or o.get("start_time")
        if end is not None:
            ends.append(end)
        cost += observation_cost(o) or 0.0
    latency = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return max(0.0, latency), cost


def observation_cost(o: Mapping[str, Any]) -> float | None:
    cd = o.get("cost_details")
    if not isinstance(cd, dict) or not cd:
        return None
    if "total" in cd:
        return float(cd["total"])
    return float(sum(float(v) for v in cd.values() if isinstance(v, int | float)))


def _usage(o: Mapping[str, Any]) -> dict[str, Any]:
    ud = o.get("usage_details") or {}
    inp = ud.get("input")
    out = ud.get("output")
    total = ud.get("total", (inp or 0) + (out or 0) if (inp is not None or out is not None) else None)
    return {"input": inp, "output": out, "total": total, "unit": "TOKENS" if ud else None}


def lf_trace(t: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "timestamp": t.get("timestamp") or t["created_at"],
        "name": t.get("name"),
        "input": raw_json(t.get("input")),
        "output": raw_json(t.get("output")),
        "sessionId": t.get("session_id"),
        "release": t.get("release"),
        "version": t.get("version"),
        "userId": t.get("user_id"),
        "metadata": t.get("metadata"),
        "tags": t.get("tags") or [],
        "public": bool(t.get("public")),
        "environment": t.get("environment") or "default",
        "projectId": t["project_id"],
        "bookmarked": False,
        "createdAt": t["created_at"],
        "updatedAt": t["updated_at"],
        "htmlPath": f"/project/{t['project_id']}/traces/{t['id']}",
    }


def lf_observation(o: Mapping[str, Any]) -> dict[str, Any]:
    start, end, cst = o.get("start_time"), o.get("end_time"), o.get("completion_start_time")
    cost = observation_cost(o)
    cd = o.get("cost_details") or {}
    return {
        "id": o["id"],
        "traceId": o["trace_id"],
        "projectId": o["project_id"],
        "type": o.get("type") or "SPAN",
        "name": o.get("name"),
        "startTime": start or o["created_at"],
        "endTime": end,
        "completionStartTime": cst,
        "model": o.get("model"),
        "modelParameters": o.get("model_parameters"),
        "input": raw_json(o.get("input")),
        "output": raw_json(o.get("output")),
        "metadata": o.get("metadata"),
        "version": o.get("version"),
        "level": o.get("level") or "DEFAULT",
        "statusMessage": o.get("status_message"),
        "parentObservationId": o.get("parent_observation_id"),
        "promptId": None,
        "promptName": o.get("prompt_name"),
        "promptVersion": o.get("prompt_version"),
        "usage": _usage(o),
        "usageDetails": o.get("usage_details") or {},
        "costDetails": cd,
        "environment": o.get("environment") or "default",
        "latency": (end - start).total_seconds() if start and end else None,
        "timeToFirstToken": (cst - start).total_seconds() if start and cst else None,
        "calculatedInputCost": cd.get("input"),
        "calculatedOutputCost": cd.get("output"),
        "calculatedTotalCost": cost,
        "totalCost": cost,
        "createdAt": o["created_at"],
        "updatedAt": o["updated_at"],
    }


# The ObservationV2 field groups of GET /api/public/v2/observations
V2_GROUPS: dict[str, tuple[str, ...]] = {
    "core": ("id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"),
    "basic": ("name", "level", "statusMessage", "version", "environment", "bookmarked", "public", "userId",
              "sessionId", "isRootObservation"),
    "time": ("completionStartTime", "createdAt", "updatedAt"),
    "io": ("input", "output"),
    "metadata": ("metadata",),
    "model": ("model", "internalModelId", "modelParameters", "modelId", "inputPrice", "outputPrice",
              "totalPrice"),
    "usage": ("usageDetails", "costDetails", "totalCost", "usagePricingTierName"),
    "prompt": ("promptId", "promptName", "promptVersion"),
    "metrics": ("latency", "timeToFirstToken"),
    "trace_context": ("tags", "release", "traceName"),
}


def lf_observation_v2(o: Mapping[str, Any], groups: Iterable[str], expand_metadata: set[str]) -> dict[str, Any]:
    full = lf_observation(o)
    full.update({
        "isRootObservation": o.get("parent_observation_id") is None,
        "public": bool(o.get("trace_public")),
        "userId": o.get("trace_user_id"),
        "sessionId": o.get("trace_session_id"),
        "tags": o.get("trace_tags") or [],
        "release": o.get("trace_release"),
        "traceName": o.get("trace_name"),
        "internalModelId": None, "modelId": None, "inputPrice": None, "outputPrice": None, "totalPrice": None,
        "usagePricingTierName": None,
    })
    md = full.get("metadata")
    if isinstance(md, dict):
        full["metadata"] = {
            k: (v[:200] if isinstance(v, str) and len(v) > 200 and k not in expand_metadata else v)
            for k, v in md.items()
        }
    out: dict[str, Any] = {}
    for g in ("core", *groups):
        for f in V2_GROUPS.get(g, ()):
            out[f] = full.get(f)
    return out


def lf_score(s: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": s["id"],
        "traceId": s.get("trace_id"),
        "sessionId": s.get("session_id"),
        "observationId": s.get("observation_id"),
        "datasetRunId": s.get("dataset_run_id"),
        "name": s["name"],
        "source": s["source"],
        "timestamp": s["timestamp"],
        "createdAt": s["created_at"],
        "updatedAt": s["updated_at"],
        "authorUserId": s.get("author_user_id"),
        "comment": s.get("comment"),
        "metadata": s.get("metadata") or {},
        "configId": s.get("config_id"),
        "queueId": s.get("queue_id"),
        "environment": s.get("environment") or "default",
        "dataType": s["data_type"],
        "value": s.get("value"),
        "stringValue": s.get("string_value"),
    }


SCORE_NATIVE = ("id", "name", "data_type", "value", "string_value", "string_values", "trace_id", "observation_id",
                "session_id", "dataset_run_id", "config_id", "config_version", "comment", "source",
                "author_user_id", "evaluator_name", "evaluator_version", "queue_id", "queue_item_id", "environment",
                "metadata", "timestamp", "created_at", "updated_at")


def native_score(s: Mapping[str, Any], config_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    out = {k: s.get(k) for k in SCORE_NATIVE}
    out["kind"] = "human" if s["source"] == "ANNOTATION" else "automated"
    if config_names is not None and s.get("config_id"):
        out["config_name"] = config_names.get(s["config_id"])
    return out


TRACE_NATIVE = ("id", "name", "timestamp", "input", "output", "metadata", "tags", "user_id", "session_id",
                "release", "version", "environment", "public", "dataset_run_name", "dataset_item_id",
                "dataset_name", "created_at", "updated_at")
OBS_NATIVE = ("id", "trace_id", "type", "name", "parent_observation_id", "start_time", "end_time",
              "completion_start_time", "level", "status_message", "model", "model_parameters", "usage_details",
              "cost_details", "input", "output", "metadata", "version", "environment", "prompt_name",
              "prompt_version")


def native_trace(t: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: t.get(k) for k in TRACE_NATIVE}
    out["input"], out["output"] = raw_json(out["input"]), raw_json(out["output"])
    out["timestamp"] = t.get("timestamp") or t["created_at"]
    out["tags"] = t.get("tags") or []
    return out


def observation_tree(obs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Observations nested under their parents (orphans whose parent is unknown stay at the top)."""
    nodes: dict[str, dict[str, Any]] = {
        o["id"]: {**{k: o.get(k) for k in OBS_NATIVE}, "cost": observation_cost(o), "children": []} for o in obs
    }
    for n in nodes.values():
        n["input"], n["output"] = raw_json(n["input"]), raw_json(n["output"])
    roots: list[dict[str, Any]] = []
    for n in nodes.values():
        parent = nodes.get(n["parent_observation_id"]) if n["parent_observation_id"] else None
        (parent["children"] if parent is not None and parent is not n else roots).append(n)

    def key(n: dict[str, Any]) -> tuple[Any, ...]:
        return (n["start_time"] is None, n["start_time"] or datetime.min, n["id"])

    def sort(ns: list[dict[str, Any]]) -> None:
        ns.sort(key=key)
        for n in ns:
            sort(n["children"])

    sort(roots)
    return roots
