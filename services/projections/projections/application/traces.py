"""Trace and observation reads: Langfuse-compatible public API and the native trace view."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters import views
from projections.adapters.tables import Tables
from projections.domain.errors import NotFound, Unsupported

ORDERABLE = {"id": "id", "timestamp": "timestamp", "name": "name", "userId": "user_id", "release": "release",
             "version": "version", "public": "public", "sessionId": "session_id"}
TRACE_FIELD_GROUPS = {"core", "io", "scores", "observations", "metrics"}


async def _observations_of(session: AsyncSession, t: Tables, project_id: str, trace_ids: Sequence[str],
                           columns: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    if not trace_ids:
        return {}
    o = t.observations
    cols = [o.c[c] for c in columns] if columns else [o]
    rows = await session.execute(
        select(*cols).where(o.c.project_id == project_id, o.c.trace_id.in_(list(trace_ids)))
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows.mappings():
        out[r["trace_id"]].append(dict(r))
    return out


async def _scores_of(session: AsyncSession, t: Tables, project_id: str, trace_ids: Sequence[str],
                     columns: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    if not trace_ids:
        return {}
    s = t.scores
    cols = [s.c[c] for c in columns] if columns else [s]
    rows = await session.execute(
        select(*cols).where(s.c.project_id == project_id, s.c.trace_id.in_(list(trace_ids)), ~s.c.deleted)
        .order_by(s.c.timestamp, s.c.id)
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows.mappings():
        out[r["trace_id"]].append(dict(r))
    return out


async def get_trace_row(session: AsyncSession, t: Tables, project_id: str, trace_id: str) -> dict[str, Any]:
    row = (await session.execute(
        select(t.traces).where(t.traces.c.project_id == project_id, t.traces.c.id == trace_id)
    )).mappings().first()
    if row is None:
        raise NotFound(f"trace {trace_id!r} not found")
    return dict(row)


async def public_trace(session: AsyncSession, t: Tables, project_id: str, trace_id: str) -> dict[str, Any]:
    trace = await get_trace_row(session, t, project_id, trace_id)
    obs = (await _observations_of(session, t, project_id, [trace_id])).get(trace_id, [])
    scores = (await _scores_of(session, t, project_id, [trace_id])).get(trace_id, [])
    latency, cost = views.latency_and_cost(obs)
    obs.sort(key=lambda o: (o.get("start_time") is None, o.get("start_time") or o["created_at"], o["id"]))
    return {
        **views.lf_trace(trace),
        "latency": latency,
        "totalCost": cost,
        "observations": [views.lf_observation(o) for o in obs],
        "scores": [views.lf_score(s) for s in scores],
    }


def _trace_filters(q: Select[Any], t: Tables, project_id: str, *, name: str | None = None,
                   user_id: str | None = None, session_id: str | None = None,
                   from_ts: datetime | None = None, to_ts: datetime | None = None,
                   tags: Sequence[str] = (), version: str | None = None, release: str | None = None,
                   environment: Sequence[str] = ()) -> Select[Any]:
    tr = t.traces
    ts = tr.c.sort_ts
    q = q.where(tr.c.project_id == project_id)
    if name is not None:
        q = q.where(tr.c.name == name)
    if user_id is not None:
        q = q.where(tr.c.user_id == user_id)
    if session_id is not None:
        q = q.where(tr.c.session_id == session_id)
    if from_ts is not None:
        q = q.where(ts >= from_ts)
    if to_ts is not None:
        q = q.where(ts < to_ts)
    if tags:
        q = q.where(tr.c.tags.op("@>")(cast(literal(orjson.dumps(list(tags)).decode()), JSONB)))
    if version is not None:
        q = q.where(tr.c.version == version)
    if release is not None:
        q = q.where(tr.c.release == release)
    if environment:
        q = q.where(func.coalesce(tr.c.environment, "default").in_(list(environment)))
    return q


def _order(t: Tables, order_by: str | None) -> list[Any]:
    tr = t.traces
    if not order_by:
        return [tr.c.sort_ts.desc(), tr.c.id.desc()]
    field, _, direction = order_by.partition(".")
    col_name = ORDERABLE.get(field)
    if col_name is None or direction not in ("asc", "desc"):
        raise Unsupported("orderBy", "format", f"fields: {sorted(ORDERABLE)}", "orderBy must be <field>.<asc|desc>")
    col = tr.c.sort_ts if col_name == "timestamp" else tr.c[col_name]
    return [col.asc() if direction == "asc" else col.desc(), tr.c.id.asc() if direction == "asc" else tr.c.id.desc()]


async def public_traces(session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int,
                        order_by: str | None, fields: str | None, **filters: Any) -> dict[str, Any]:
    groups = TRACE_FIELD_GROUPS if not fields else {f.strip() for f in fields.split(",") if f.strip()} | {"core"}
    tr = t.traces
    base = _trace_filters(select(tr), t, project_id, **filters)
    total = (await session.execute(
        _trace_filters(select(func.count()).select_from(tr), t, project_id, **filters)
    )).scalar_one()
    rows = [dict(r) for r in (await session.execute(
        base.order_by(*_order(t, order_by)).limit(limit).offset((page - 1) * limit)
    )).mappings()]
    ids = [r["id"] for r in rows]
    obs = await _observations_of(session, t, project_id, ids,
                                 ["id", "trace_id", "start_time", "end_time", "cost_details"])
    scores = await _scores_of(session, t, project_id, ids, ["id", "trace_id"]) if "scores" in groups else {}
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


def _apply_filter_json(q: Select[Any], t: Tables, raw: str) -> Select[Any]:
    try:
        conds = orjson.loads(raw)
        assert isinstance(conds, list)
    except (orjson.JSONDecodeError, AssertionError):
        raise Unsupported("filter", "json_array", "not a JSON array",
                          "filter must be a JSON array of conditions") from None
    o, tr = t.observations, t.traces
    for i, c in enumerate(conds):
        if not isinstance(c, dict):
            raise Unsupported(f"filter[{i}]", "object", "not an object", "each filter condition must be an object")
        column, op, value = c.get("column"), c.get("operator"), c.get("value")
        if column in _V2_FILTER_COLUMNS:
            col: Any = o.c[_V2_FILTER_COLUMNS[column]]
        elif column in _TRACE_FILTER_COLUMNS:
            col = tr.c[_TRACE_FILTER_COLUMNS[column]]
        elif column in ("tags", "traceTags"):
            col = tr.c.tags
        elif column == "isRootObservation":
            want = bool(value) if op == "=" else not bool(value)
            q = q.where(o.c.parent_observation_id.is_(None) if want else o.c.parent_observation_id.isnot(None))
            continue
        elif column == "metadata" and c.get("key"):
            col = o.c.metadata[str(c["key"])].astext
        else:
            raise Unsupported(f"filter[{i}].column", "supported_column", str(column),
                              f"unsupported filter column {column!r}")
        if column in ("startTime", "endTime") and isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if column in ("tags", "traceTags"):
            vals = list(value or [])
            if op == "any of":
                q = q.where(or_(*[col.op("?")(v) for v in vals]) if vals else literal(False))
            elif op == "all of":
                q = q.where(col.op("@>")(cast(literal(orjson.dumps(vals).decode()), JSONB)))
            elif op == "none of":
                q = q.where(~or_(*[func.coalesce(col, cast(literal("[]"), JSONB)).op("?")(v) for v in vals]))
            else:
                raise Unsupported(None, None, f"unsupported operator {op!r} for {column}")
            continue
        ops = {"=": lambda c, v: c == v, ">": lambda c, v: c > v, "<": lambda c, v: c < v,
               ">=": lambda c, v: c >= v, "<=": lambda c, v: c <= v, "<>": lambda c, v: c != v,
               "contains": lambda c, v: c.contains(v, autoescape=True),
               "does not contain": lambda c, v: ~c.contains(v, autoescape=True),
               "starts with": lambda c, v: c.startswith(v, autoescape=True),
               "ends with": lambda c, v: c.endswith(v, autoescape=True),
               "any of": lambda c, v: c.in_(list(v or [])), "none of": lambda c, v: ~c.in_(list(v or [])),
               "is null": lambda c, v: c.is_(None), "is not null": lambda c, v: c.isnot(None)}
        fn = ops.get(op)  # type: ignore[arg-type]
        if fn is None:
            raise Unsupported(f"filter[{i}].operator", "supported_operator", str(op), f"unsupported operator {op!r}")
        q = q.where(fn(col, value))
    return q


async def public_observations_v2(
    session: AsyncSession, t: Tables, project_id: str, *, fields: str | None, expand_metadata: str | None,
    limit: int, cursor: str | None, filter_json: str | None, name: str | None = None,
    user_id: str | None = None, session_id: str | None = None, type_: str | None = None,
    trace_id: str | None = None, level: str | None = None, parent_observation_id: str | None = None,
    is_root_observation: bool | None = None, environment: Sequence[str] = (),
    from_start_time: datetime | None = None, to_start_time: datetime | None = None, version: str | None = None,
) -> dict[str, Any]:
    o, tr = t.observations, t.traces
    groups = ["basic"] if not fields else [g.strip() for g in fields.split(",") if g.strip()]
    unknown = [g for g in groups if g not in views.V2_GROUPS]
    if unknown:
        raise Unsupported("fields", "field_group", f"one of {sorted(views.V2_GROUPS)}",
                          f"unknown field groups {unknown}")
    start = func.coalesce(o.c.start_time, o.c.created_at).label("sort_start")
    q = (
        select(o, start, tr.c.name.label("trace_name"), tr.c.user_id.label("trace_user_id"),
               tr.c.session_id.label("trace_session_id"), tr.c.tags.label("trace_tags"),
               tr.c.release.label("trace_release"), tr.c.public.label("trace_public"))
        .select_from(o.outerjoin(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id)))
        .where(o.c.project_id == project_id)
    )
    if filter_json:
        q = _apply_filter_json(q, t, filter_json)
    else:
        simple = {o.c.name: name, tr.c.user_id: user_id, tr.c.session_id: session_id, o.c.type: type_,
                  o.c.trace_id: trace_id, o.c.level: level, o.c.version: version}
        for col, val in simple.items():
            if val is not None:
                q = q.where(col == val)
        if parent_observation_id is not None:
            q = q.where(o.c.parent_observation_id == parent_observation_id if parent_observation_id
                        else o.c.parent_observation_id.is_(None))
        if is_root_observation is not None:
            q = q.where(o.c.parent_observation_id.is_(None) if is_root_observation
                        else o.c.parent_observation_id.isnot(None))
        if environment:
            q = q.where(func.coalesce(o.c.environment, "default").in_(list(environment)))
        if from_start_time is not None:
            q = q.where(o.c.start_time >= from_start_time)
        if to_start_time is not None:
            q = q.where(o.c.start_time < to_start_time)
    if cursor:
        cs, ci = decode_cursor(cursor)
        q = q.where(tuple_(func.coalesce(o.c.start_time, o.c.created_at), o.c.id) < tuple_(literal(cs), literal(ci)))
    q = q.order_by(func.coalesce(o.c.start_time, o.c.created_at).desc(), o.c.id.desc()).limit(limit + 1)
    rows = [dict(r) for r in (await session.execute(q)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    expand = {k.strip() for k in (expand_metadata or "").split(",") if k.strip()}
    meta: dict[str, Any] = {}
    if more and rows:
        meta["cursor"] = encode_cursor(rows[-1]["sort_start"], rows[-1]["id"])
    return {"data": [views.lf_observation_v2(r, groups, expand) for r in rows], "meta": meta}


async def public_observation(session: AsyncSession, t: Tables, project_id: str, oid: str) -> dict[str, Any]:
    o = t.observations
    row = (await session.execute(select(o).where(o.c.project_id == project_id, o.c.id == oid))).mappings().first()
    if row is None:
        raise NotFound(f"observation {oid!r} not found")
    return views.lf_observation(row)


# -- native trace view -------------------------------------------------------------------------------------------

async def native_trace(session: AsyncSession, t: Tables, project_id: str, trace_id: str) -> dict[str, Any]:
    trace = await get_trace_row(session, t, project_id, trace_id)
    obs = (await _observations_of(session, t, project_id, [trace_id])).get(trace_id, [])
    scores = (await _scores_of(session, t, project_id, [trace_id])).get(trace_id, [])
    cfg_ids = sorted({s["config_id"] for s in scores if s.get("config_id")})
    names: dict[str, str] = {}
    if cfg_ids:
        c = t.score_configs
        names = {r[0]: r[1] for r in (await session.execute(
            select(c.c.id, c.c.name).where(c.c.project_id == project_id, c.c.id.in_(cfg_ids))))}
    qi, qr, qq = t.queue_items, t.queue_reviews, t.queues
    items = [dict(r) for r in (await session.execute(
        select(qi, qq.c.name.label("queue_name"))
        .select_from(qi.outerjoin(qq, and_(qq.c.project_id == qi.c.project_id, qq.c.id == qi.c.queue_id)))
        .where(qi.c.project_id == project_id, or_(qi.c.trace_id == trace_id, qi.c.object_id == trace_id))
        .order_by(qi.c.queue_id, qi.c.item_id)
    )).mappings()]
    reviews: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    if items:
        for r in (await session.execute(
            select(qr).where(qr.c.project_id == project_id,
                             tuple_(qr.c.queue_id, qr.c.item_id).in_([(i["queue_id"], i["item_id"]) for i in items]))
            .order_by(qr.c.reviewer)
        )).mappings():
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
    session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int, order_by: str | None,
    level: str | None = None, score_name: str | None = None, score_min: float | None = None,
    score_max: float | None = None, score_label: str | None = None, score_source: str | None = None,
    **filters: Any,
) -> dict[str, Any]:
    tr, o, s = t.traces, t.observations, t.scores
    q = _trace_filters(select(tr.c.id), t, project_id, **filters)
    if level is not None:
        q = q.where(select(o.c.id).where(o.c.project_id == tr.c.project_id, o.c.trace_id == tr.c.id,
                                         o.c.level == level).exists())
    if score_name is not None or score_min is not None or score_max is not None or score_label is not None:
        sq = select(s.c.id).where(s.c.project_id == tr.c.project_id, s.c.trace_id == tr.c.id, ~s.c.deleted)
        if score_name is not None:
            sq = sq.where(s.c.name == score_name)
        if score_min is not None:
            sq = sq.where(s.c.value >= score_min)
        if score_max is not None:
            sq = sq.where(s.c.value <= score_max)
        if score_label is not None:
            sq = sq.where(s.c.string_value == score_label)
        if score_source is not None:
            sq = sq.where(s.c.source == score_source)
        q = q.where(sq.exists())
    total = (await session.execute(select(func.count()).select_from(q.subquery()))).scalar_one()
    ids = [r[0] for r in (await session.execute(
        q.add_columns(tr.c.sort_ts, tr.c.name, tr.c.user_id, tr.c.release, tr.c.version, tr.c.public,
                      tr.c.session_id).order_by(*_order(t, order_by))
        .limit(limit).offset((page - 1) * limit)))]
    rows = {r["id"]: dict(r) for r in (await session.execute(
        select(tr).where(tr.c.project_id == project_id, tr.c.id.in_(ids)))).mappings()} if ids else {}
    obs = await _observations_of(session, t, project_id, ids,
                                 ["id", "trace_id", "start_time", "end_time", "cost_details", "level"])
    scores = await _scores_of(session, t, project_id, ids, ["trace_id", "name", "source", "value",
                                                            "string_value", "data_type"])
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
