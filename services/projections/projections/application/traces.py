"""Trace and observation reads: Langfuse-compatible public API and the native trace view. The SQL is
``adapters/queries/traces.py``; here: the parameter rules (field groups, orderBy, cursors, the ``filter``
conditions), paging, and composing traces with their observations, scores and queue items."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from projections.adapters import views
from projections.domain.errors import NotFound, Unsupported

ORDERABLE = {"id": "id", "timestamp": "timestamp", "name": "name", "userId": "user_id", "release": "release",
             "version": "version", "public": "public", "sessionId": "session_id"}
TRACE_FIELD_GROUPS = {"core", "io", "scores", "observations", "metrics"}
OPERATORS = frozenset({"=", ">", "<", ">=", "<=", "<>", "contains", "does not contain", "starts with", "ends with",
                       "any of", "none of", "is null", "is not null"})
TAG_OPERATORS = frozenset({"any of", "all of", "none of"})


@dataclass(frozen=True)
class TraceFilters:
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    from_ts: datetime | None = None
    to_ts: datetime | None = None
    tags: Sequence[str] = ()
    version: str | None = None
    release: str | None = None
    environment: Sequence[str] = ()


@dataclass(frozen=True)
class Order:
    field: str  # a column of the traces read model ("timestamp": the trace's sort time)
    ascending: bool


@dataclass(frozen=True)
class ScoreMatch:
    """Traces with at least one live score matching all of these."""

    name: str | None = None
    min: float | None = None
    max: float | None = None
    label: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ObservationFilters:
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    type_: str | None = None
    trace_id: str | None = None
    level: str | None = None
    parent_observation_id: str | None = None
    is_root_observation: bool | None = None
    environment: Sequence[str] = ()
    from_start_time: datetime | None = None
    to_start_time: datetime | None = None
    version: str | None = None


@dataclass(frozen=True)
class Condition:
    """One checked condition of the v2 ``filter``: on a column of the observation (``kind`` "observation") or of
    its trace ("trace"), on one metadata key ("metadata", ``field`` the key), on the trace's tags ("tags"), or
    whether it is a root observation ("root", ``value`` the wanted answer)."""

    kind: str
    field: str
    operator: str
    value: Any


class TraceReads(Protocol):
    async def observations_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                              ) -> dict[str, list[dict[str, Any]]]: ...

    async def scores_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                        ) -> dict[str, list[dict[str, Any]]]: ...

    async def trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None: ...

    async def trace_page(self, project_id: str, f: TraceFilters, order: Order | None, *, offset: int, limit: int
                         ) -> tuple[int, list[dict[str, Any]]]: ...

    async def observations_v2(self, project_id: str, f: ObservationFilters | Sequence[Condition],
                              after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]: ...

    async def observation(self, project_id: str, oid: str) -> dict[str, Any] | None: ...

    async def config_names(self, project_id: str, config_ids: Sequence[str]) -> dict[str, str]: ...

    async def queue_items_of(self, project_id: str, trace_id: str) -> list[dict[str, Any]]: ...

    async def reviews_of(self, project_id: str, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]: ...

    async def native_trace_ids(self, project_id: str, f: TraceFilters, *, level: str | None,
                               score: ScoreMatch | None, order: Order | None, offset: int, limit: int
                               ) -> tuple[int, list[str]]: ...

    async def traces_by_id(self, project_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


async def get_trace_row(store: TraceReads, project_id: str, trace_id: str) -> dict[str, Any]:
    row = await store.trace(project_id, trace_id)
    if row is None:
        raise NotFound(f"trace {trace_id!r} not found")
    return row


async def public_trace(store: TraceReads, project_id: str, trace_id: str) -> dict[str, Any]:
    trace = await get_trace_row(store, project_id, trace_id)
    obs = (await store.observations_of(project_id, [trace_id])).get(trace_id, [])
    scores = (await store.scores_of(project_id, [trace_id])).get(trace_id, [])
    latency, cost = views.latency_and_cost(obs)
    obs.sort(key=lambda o: (o.get("start_time") is None, o.get("start_time") or o["created_at"], o["id"]))
    return {
        **views.lf_trace(trace),
        "latency": latency,
        "totalCost": cost,
        "observations": [views.lf_observation(o) for o in obs],
        "scores": [views.lf_score(s) for s in scores],
    }


def parse_order(order_by: str | None) -> Order | None:
    """``<field>.<asc|desc>`` (Langfuse's orderBy); None: newest first."""
    if not order_by:
        return None
    field, _, direction = order_by.partition(".")
    col_name = ORDERABLE.get(field)
    if col_name is None or direction not in ("asc", "desc"):
        raise Unsupported("orderBy", "format", f"fields: {sorted(ORDERABLE)}", "orderBy must be <field>.<asc|desc>")
    return Order(col_name, direction == "asc")


async def public_traces(store: TraceReads, project_id: str, *, page: int, limit: int,
                        order_by: str | None, fields: str | None, filters: TraceFilters) -> dict[str, Any]:
    groups = TRACE_FIELD_GROUPS if not fields else {f.strip() for f in fields.split(",") if f.strip()} | {"core"}
    order = parse_order(order_by)
    total, rows = await store.trace_page(project_id, filters, order, offset=(page - 1) * limit, limit=limit)
    ids = [r["id"] for r in rows]
    obs = await store.observations_of(project_id, ids, ["id", "trace_id", "start_time", "end_time", "cost_details"])
    scores = await store.scores_of(project_id, ids, ["id", "trace_id"]) if "scores" in groups else {}
    data = []
    for r in rows:
        item = views.lf_trace(r)
        if "io" not in groups:
            for k in ("input", "output", "metadata"):
                item.pop(k, None)
        if "observations" in groups:
            item["observations"] = [o["id"] for o in obs.get(r["id"], [])]
        if "scores" in groups:
            item["scores"] = [s["id"] for s in scores.get(r["id"], [])]
        if "metrics" in groups:
            item["latency"], item["totalCost"] = views.latency_and_cost(obs.get(r["id"], []))
        data.append(item)
    return {"data": data, "meta": {"page": page, "limit": limit, "totalItems": total,
                                   "totalPages": (total + limit - 1) // limit}}


# -- observations -------------------------------------------------------------------------------------------------

def encode_cursor(start: datetime, oid: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"s": start.isoformat(), "i": oid})).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(data["s"]), str(data["i"])
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise Unsupported("cursor", "format", "use the cursor of a previous page", "invalid cursor") from None


_V2_FILTER_COLUMNS = {
    "id": "id", "type": "type", "name": "name", "traceId": "trace_id", "startTime": "start_time",
    "endTime": "end_time", "environment": "environment", "level": "level", "statusMessage": "status_message",
    "version": "version", "model": "model", "providedModelName": "model", "parentObservationId":
    "parent_observation_id",
}
_TRACE_FILTER_COLUMNS = {"userId": "user_id", "sessionId": "session_id", "traceName": "name"}


def parse_filter(raw: str) -> list[Condition]:
    """The v2 ``filter`` JSON as checked conditions; the first condition that cannot be served is refused."""
    try:
        conds = orjson.loads(raw)
        assert isinstance(conds, list)
    except (orjson.JSONDecodeError, AssertionError):
        raise Unsupported("filter", "json_array", "not a JSON array",
                          "filter must be a JSON array of conditions") from None
    out = []
    for i, c in enumerate(conds):
        if not isinstance(c, dict):
            raise Unsupported(f"filter[{i}]", "object", "not an object", "each filter condition must be an object")
        column, op, value = c.get("column"), c.get("operator"), c.get("value")
        if column in _V2_FILTER_COLUMNS:
            kind, field = "observation", _V2_FILTER_COLUMNS[column]
        elif column in _TRACE_FILTER_COLUMNS:
            kind, field = "trace", _TRACE_FILTER_COLUMNS[column]
        elif column in ("tags", "traceTags"):
            kind, field = "tags", "tags"
        elif column == "isRootObservation":
            out.append(Condition("root", "parent_observation_id", "=",
                                 bool(value) if op == "=" else not bool(value)))
            continue
        elif column == "metadata" and c.get("key"):
            kind, field = "metadata", str(c["key"])
        else:
            raise Unsupported(f"filter[{i}].column", "supported_column", str(column),
                              f"unsupported filter column {column!r}")
        if column in ("startTime", "endTime") and isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if kind == "tags":
            if op not in TAG_OPERATORS:
                raise Unsupported(None, None, f"unsupported operator {op!r} for {column}")
        elif op not in OPERATORS:
            raise Unsupported(f"filter[{i}].operator", "supported_operator", str(op), f"unsupported operator {op!r}")
        out.append(Condition(kind, field, op, value))
    return out


async def public_observations_v2(
    store: TraceReads, project_id: str, *, fields: str | None, expand_metadata: str | None,
    limit: int, cursor: str | None, filter_json: str | None, filters: ObservationFilters,
) -> dict[str, Any]:
    groups = ["basic"] if not fields else [g.strip() for g in fields.split(",") if g.strip()]
    unknown = [g for g in groups if g not in views.V2_GROUPS]
    if unknown:
        raise Unsupported("fields", "field_group", f"one of {sorted(views.V2_GROUPS)}",
                          f"unknown field groups {unknown}")
    # the ``filter`` conditions replace the simple parameters
    where: ObservationFilters | list[Condition] = parse_filter(filter_json) if filter_json else filters
    after = decode_cursor(cursor) if cursor else None
    rows = await store.observations_v2(project_id, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    expand = {k.strip() for k in (expand_metadata or "").split(",") if k.strip()}
    meta: dict[str, Any] = {}
    if more and rows:
        meta["cursor"] = encode_cursor(rows[-1]["sort_start"], rows[-1]["id"])
    return {"data": [views.lf_observation_v2(r, groups, expand) for r in rows], "meta": meta}


async def public_observation(store: TraceReads, project_id: str, oid: str) -> dict[str, Any]:
    row = await store.observation(project_id, oid)
    if row is None:
        raise NotFound(f"observation {oid!r} not found")
    return views.lf_observation(row)


# -- native trace view -------------------------------------------------------------------------------------------

async def native_trace(store: TraceReads, project_id: str, trace_id: str) -> dict[str, Any]:
    trace = await get_trace_row(store, project_id, trace_id)
    obs = (await store.observations_of(project_id, [trace_id])).get(trace_id, [])
    scores = (await store.scores_of(project_id, [trace_id])).get(trace_id, [])
    cfg_ids = sorted({s["config_id"] for s in scores if s.get("config_id")})
    names = await store.config_names(project_id, cfg_ids) if cfg_ids else {}
    items = await store.queue_items_of(project_id, trace_id)
    reviews: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    if items:
        for r in await store.reviews_of(project_id, [(i["queue_id"], i["item_id"]) for i in items]):
            reviews[(r["queue_id"], r["item_id"])].append(
                {k: r[k] for k in ("reviewer", "leased_at", "completed_at", "skipped_at", "skip_reason",
                                   "flagged_at", "flag_reason")} | {"status": review_status(r)})
    latency, cost = views.latency_and_cost(obs)
    return {
        "trace": views.native_trace(trace),
        "latency": latency,
        "total_cost": cost,
        "observations": views.observation_tree(obs),
        "scores": [views.native_score(s, names) for s in scores],
        "queue_items": [
            {k: i[k] for k in ("queue_id", "queue_name", "item_id", "object_type", "object_id", "added_at",
                               "completed_at", "removed_at", "flagged_at", "reason")}
            | {"status": item_status(i), "reviews": reviews.get((i["queue_id"], i["item_id"]), [])}
            for i in items
        ],
    }


def item_status(i: dict[str, Any]) -> str:
    if i.get("removed_at"):
        return "REMOVED"
    if i.get("completed_at"):
        return "COMPLETED"
    if i.get("first_leased_at"):
        return "IN_PROGRESS"
    return "PENDING"


def review_status(r: Any) -> str:
    if r["completed_at"]:
        return "COMPLETED"
    if r["skipped_at"]:
        return "SKIPPED"
    if r["flagged_at"]:
        return "FLAGGED"
    return "IN_PROGRESS"


async def native_traces(
    store: TraceReads, project_id: str, *, page: int, limit: int, order_by: str | None, filters: TraceFilters,
    level: str | None = None, score_name: str | None = None, score_min: float | None = None,
    score_max: float | None = None, score_label: str | None = None, score_source: str | None = None,
) -> dict[str, Any]:
    order = parse_order(order_by)
    # the source narrows a score filter; alone it filters nothing
    score = (ScoreMatch(score_name, score_min, score_max, score_label, score_source)
             if any(v is not None for v in (score_name, score_min, score_max, score_label)) else None)
    total, ids = await store.native_trace_ids(project_id, filters, level=level, score=score, order=order,
                                              offset=(page - 1) * limit, limit=limit)
    rows = await store.traces_by_id(project_id, ids)
    obs = await store.observations_of(project_id, ids,
                                      ["id", "trace_id", "start_time", "end_time", "cost_details", "level"])
    scores = await store.scores_of(project_id, ids, ["trace_id", "name", "source", "value", "string_value",
                                                     "data_type"])
    data = []
    for tid in ids:
        r = rows[tid]
        latency, cost = views.latency_and_cost(obs.get(tid, []))
        levels: dict[str, int] = defaultdict(int)
        for ob in obs.get(tid, []):
            levels[ob.get("level") or "DEFAULT"] += 1
        summary: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for sc in scores.get(tid, []):
            summary[(sc["name"], sc["source"])].append(sc)
        data.append({
            **{k: v for k, v in views.native_trace(r).items() if k not in ("input", "output", "metadata")},
            "latency": latency, "total_cost": cost, "observation_count": len(obs.get(tid, [])),
            "levels": dict(levels),
            "scores": [
                {"name": n, "source": src, "count": len(v),
                 "mean": (sum(x["value"] for x in v if x["value"] is not None) /
                          max(1, sum(1 for x in v if x["value"] is not None)))
                 if any(x["value"] is not None for x in v) else None,
                 "labels": sorted({x["string_value"] for x in v if x["string_value"] is not None})}
                for (n, src), v in sorted(summary.items())
            ],
        })
    return {"data": data, "meta": {"page": page, "limit": limit, "total": total}}
