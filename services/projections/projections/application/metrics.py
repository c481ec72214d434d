"""Langfuse's metrics API over the read models: the query object of ``GET /api/public/metrics`` (v1) and
``GET /api/public/v2/metrics``, and the daily metrics of ``GET /api/public/metrics/daily``.

Every view, dimension, measure, aggregation, filter column and operator is looked up in the whitelists below and
becomes a SQLAlchemy expression; user input only ever reaches the database as bound parameters. Anything not in
the lists is a 400 naming the field and what it may be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Float, Numeric, and_, case, cast, func, literal, literal_column, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from projections.adapters.tables import Tables
from projections.domain.errors import Unsupported

MAX_ROWS = 1000
DEFAULT_ROWS = 100
AGGREGATIONS = ("sum", "avg", "count", "max", "min", "p50", "p75", "p90", "p95", "p99")
PERCENTILES = {"p50": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99}
GRANULARITIES = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
                 "week": timedelta(weeks=1), "month": timedelta(days=30)}


def _bad(field_: str, rule: str, message: str, summary: str | None = None) -> Unsupported:
    return Unsupported(field_, rule, message, summary)


def _num(col: Any) -> ColumnElement[Any]:
    """A JSON number field as an exact numeric (NULL when absent). Not a double: every stored number is one, but
    sums and input + output of values near 1e308 overflow a double, and PostgreSQL raises rather than answer."""
    return cast(col.astext, Numeric)


# The largest double, as a numeric (a double literal would turn the comparison into a double one, which overflows).
_MAX_DOUBLE = literal(Decimal("1.7976931348623157e308"), Numeric)


def _as_double(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """A numeric result as a double for the response; NULL where no double holds it (as the trace reads write a
    total cost past the largest double)."""
    return case((func.abs(value) <= _MAX_DOUBLE, cast(value, Float)), else_=None)


def _whole(value: float | None) -> int | float | None:
    """Token sums as integers, as Langfuse writes them, where an integer is what they are."""
    return int(value) if value is not None and math.isfinite(value) and abs(value) < 2**63 else value


def _ms(later: Any, earlier: Any) -> ColumnElement[Any]:
    return func.extract("epoch", later - earlier) * 1000


@dataclass
class View:
    source: Any
    time: ColumnElement[Any]
    where: list[ColumnElement[Any]]
    dimensions: dict[str, ColumnElement[Any]]
    measures: dict[str, ColumnElement[Any]]
    # measures counted as distinct values whatever the aggregation (uniqueUserIds)
    distinct: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    # dimensions v2 refuses to group by (Langfuse: use them in filters instead)
    high_cardinality: frozenset[str] = frozenset()
    # filter-only columns: JSONB arrays (tags) and JSONB objects (metadata)
    arrays: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)


def _views(t: Tables, project_id: str) -> dict[str, Callable[[], View]]:
    tr, o, s = t.traces, t.observations, t.scores
    env_o = func.coalesce(o.c.environment, "default")
    cost_total = func.coalesce(_num(o.c.cost_details["total"]),
                               _num(o.c.cost_details["input"]) + _num(o.c.cost_details["output"]))
    tok_total = func.coalesce(_num(o.c.usage_details["total"]),
                              _num(o.c.usage_details["input"]) + _num(o.c.usage_details["output"]))
    joined_trace = and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id)

    def traces() -> View:
        agg = (select(o.c.trace_id, func.count().label("n_obs"), func.sum(cost_total).label("cost"),
                      func.sum(tok_total).label("tokens"), func.min(o.c.start_time).label("first_start"),
                      func.max(func.coalesce(o.c.end_time, o.c.start_time)).label("last_end"))
               .where(o.c.project_id == project_id).group_by(o.c.trace_id).subquery("obs_agg"))
        sagg = (select(s.c.trace_id, func.count().label("n_scores"))
                .where(s.c.project_id == project_id, ~s.c.deleted).group_by(s.c.trace_id).subquery("score_agg"))
        source = tr.outerjoin(agg, agg.c.trace_id == tr.c.id).outerjoin(sagg, sagg.c.trace_id == tr.c.id)
        return View(
            source=source, time=tr.c.sort_ts, where=[tr.c.project_id == project_id],
            dimensions={"id": tr.c.id, "name": tr.c.name, "userId": tr.c.user_id, "sessionId": tr.c.session_id,
                        "release": tr.c.release, "version": tr.c.version,
                        "environment": func.coalesce(tr.c.environment, "default"),
                        "timestampMonth": func.to_char(func.timezone("UTC", tr.c.sort_ts), "YYYY-MM"),
                        "timestampDay": func.to_char(func.timezone("UTC", tr.c.sort_ts), "YYYY-MM-DD")},
            measures={"count": literal(1), "observationsCount": func.coalesce(agg.c.n_obs, 0),
                      "scoresCount": func.coalesce(sagg.c.n_scores, 0),
                      "latency": _ms(agg.c.last_end, agg.c.first_start),
                      "totalTokens": func.coalesce(agg.c.tokens, 0), "totalCost": func.coalesce(agg.c.cost, 0)},
            distinct={"uniqueUserIds": tr.c.user_id, "uniqueSessionIds": tr.c.session_id},
            arrays={"tags": tr.c.tags}, objects={"metadata": tr.c.metadata},
        )

    def observations() -> View:
        start = func.coalesce(o.c.start_time, o.c.created_at)
        return View(
            source=o.outerjoin(tr, joined_trace), time=start, where=[o.c.project_id == project_id],
            dimensions={"id": o.c.id, "traceId": o.c.trace_id, "userId": tr.c.user_id,
                        "sessionId": tr.c.session_id, "parentObservationId": o.c.parent_observation_id,
                        "environment": env_o, "type": o.c.type, "name": o.c.name, "level": o.c.level,
                        "version": o.c.version, "release": tr.c.release, "traceName": tr.c.name,
                        "traceRelease": tr.c.release, "traceVersion": tr.c.version,
                        "providedModelName": o.c.model,
                        "isRootObservation": o.c.parent_observation_id.is_(None),
                        "startTimeMonth": func.to_char(func.timezone("UTC", start), "YYYY-MM")},
            measures={"count": literal(1), "latency": _ms(o.c.end_time, o.c.start_time),
                      "streamingLatency": _ms(o.c.end_time, o.c.completion_start_time),
                      "timeToFirstToken": _ms(o.c.completion_start_time, o.c.start_time),
                      "inputTokens": _num(o.c.usage_details["input"]),
                      "outputTokens": _num(o.c.usage_details["output"]), "totalTokens": tok_total,
                      "inputCost": _num(o.c.cost_details["input"]), "outputCost": _num(o.c.cost_details["output"]),
                      "totalCost": cost_total},
            high_cardinality=frozenset({"id", "traceId", "userId", "sessionId", "parentObservationId"}),
            arrays={"tags": tr.c.tags}, objects={"metadata": o.c.metadata},
        )

    def scores(data_types: Sequence[str], extra: dict[str, ColumnElement[Any]],
               measures: dict[str, ColumnElement[Any]]) -> Callable[[], View]:
        def make() -> View:
            ts = s.c.timestamp
            return View(
                source=s.outerjoin(tr, and_(tr.c.project_id == s.c.project_id, tr.c.id == s.c.trace_id)),
                time=ts, where=[s.c.project_id == project_id, ~s.c.deleted, s.c.data_type.in_(list(data_types))],
                dimensions={"id": s.c.id, "traceId": s.c.trace_id, "userId": tr.c.user_id,
                            "sessionId": func.coalesce(s.c.session_id, tr.c.session_id),
                            "observationId": s.c.observation_id,
                            "environment": func.coalesce(s.c.environment, tr.c.environment, "default"),
                            "name": s.c.name, "source": s.c.source, "dataType": s.c.data_type,
                            "configId": s.c.config_id, "traceName": tr.c.name, "traceRelease": tr.c.release,
                            "traceVersion": tr.c.version,
                            "timestampMonth": func.to_char(func.timezone("UTC", ts), "YYYY-MM"),
                            "timestampDay": func.to_char(func.timezone("UTC", ts), "YYYY-MM-DD"), **extra},
                measures={"count": literal(1), **measures},
                high_cardinality=frozenset({"id", "traceId", "userId", "sessionId", "observationId"}),
                arrays={"tags": tr.c.tags}, objects={"metadata": s.c.metadata},
            )
        return make

    return {
        "traces": traces,
        "observations": observations,
        "scores-numeric": scores(("NUMERIC", "BOOLEAN"), {"value": s.c.value}, {"value": s.c.value}),
        "scores-boolean": scores(("BOOLEAN",), {"booleanValue": s.c.value == 1}, {"value": s.c.value}),
        "scores-categorical": scores(("CATEGORICAL",), {"stringValue": s.c.string_value}, {}),
    }


V1_VIEWS = ("traces", "observations", "scores-numeric", "scores-categorical", "scores-boolean")
V2_VIEWS = ("observations", "scores-numeric", "scores-boolean", "scores-categorical")


def _parse_ts(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise _bad(f"query.{name}", "required", "an ISO 8601 date-time")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"query.{name}", "datetime", "an ISO 8601 date-time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


_SCALAR_OPS: dict[str, Callable[[Any, Any], ColumnElement[Any]]] = {
    "=": lambda c, v: c == v, "<>": lambda c, v: c != v, ">": lambda c, v: c > v, "<": lambda c, v: c < v,
    ">=": lambda c, v: c >= v, "<=": lambda c, v: c <= v,
    "contains": lambda c, v: c.contains(v, autoescape=True),
    "does not contain": lambda c, v: ~c.contains(v, autoescape=True),
    "starts with": lambda c, v: c.startswith(v, autoescape=True),
    "ends with": lambda c, v: c.endswith(v, autoescape=True),
}
_STRING_ONLY = frozenset({"contains", "does not contain", "starts with", "ends with"})


def _filter(view: View, i: int, f: Any) -> ColumnElement[Any]:
    where = f"query.filters[{i}]"
    if not isinstance(f, dict):
        raise _bad(where, "object", "a filter object {column, operator, value, type}")
    column, op, value = f.get("column"), f.get("operator"), f.get("value")
    if op in ("is null", "is not null") and isinstance(column, str) and column in view.dimensions:
        col = view.dimensions[column]
        return col.is_(None) if op == "is null" else col.isnot(None)
    if isinstance(column, str) and column in view.arrays:
        arr = func.coalesce(view.arrays[column], cast(literal("[]"), JSONB))
        vals = value if isinstance(value, list) else None
        if vals is None or not all(isinstance(v, str) for v in vals):
            raise _bad(f"{where}.value", "string_list", "a list of strings")
        if op == "any of":
            return or_(*[arr.op("?")(v) for v in vals]) if vals else literal(False)
        if op == "all of":
            return arr.op("@>")(cast(literal(orjson.dumps(vals).decode()), JSONB))
        if op == "none of":
            return ~or_(*[arr.op("?")(v) for v in vals]) if vals else literal(True)
        raise _bad(f"{where}.operator", "supported_operator", "any of, all of or none of")
    if isinstance(column, str) and column in view.objects:
        key = f.get("key")
        if not isinstance(key, str) or not key:
            raise _bad(f"{where}.key", "required", "the metadata key to compare")
        col = view.objects[column][key].astext
        if f.get("type") == "numberObject":
            col = cast(col, Float)
    elif column == "timestamp" or column == "startTime":
        col = view.time
        value = _parse_ts(value, f"filters[{i}].value")
    elif isinstance(column, str) and column in view.dimensions:
        col = view.dimensions[column]
        if f.get("type") == "datetime":
            value = _parse_ts(value, f"filters[{i}].value")
    else:
        raise _bad(f"{where}.column", "supported_column",
                   f"one of {sorted([*view.dimensions, *view.arrays, *view.objects])}",
                   f"unknown filter column {column!r}")
    if op in ("any of", "none of"):
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise _bad(f"{where}.value", "list", "a list of values")
        cond = col.in_(value) if value else literal(False)
        return cond if op == "any of" else ~cond
    if op in ("is null", "is not null"):
        return col.is_(None) if op == "is null" else col.isnot(None)
    fn = _SCALAR_OPS.get(op) if isinstance(op, str) else None
    if fn is None:
        raise _bad(f"{where}.operator", "supported_operator",
                   f"one of {sorted([*_SCALAR_OPS, 'any of', 'none of', 'is null', 'is not null'])}")
    if op in _STRING_ONLY and not isinstance(value, str):
        raise _bad(f"{where}.value", "string", "a string")
    if not isinstance(value, str | int | float | bool | datetime):
        raise _bad(f"{where}.value", "scalar", "a string, number, boolean or date-time")
    return fn(col, value)


def _aggregate(agg: str, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    if agg == "count":
        return func.count(expr)
    if agg in PERCENTILES:
        return func.percentile_cont(PERCENTILES[agg]).within_group(_as_double(expr))
    # in exact numerics, converted once at the end: no sum, mean or sum of input and output can overflow
    exact = cast(expr, Numeric)
    if agg == "sum":
        return _as_double(func.sum(exact))
    if agg == "avg":
        return _as_double(func.avg(exact))
    return _as_double(func.max(exact) if agg == "max" else func.min(exact))


def _granularity(tdim: Any, from_ts: datetime, to_ts: datetime) -> str:
    g = tdim.get("granularity") if isinstance(tdim, dict) else None
    if g == "auto":
        step = (to_ts - from_ts) / 50
        return next((name for name, size in GRANULARITIES.items() if size >= step), "month")
    if g not in GRANULARITIES:
        raise _bad("query.timeDimension.granularity", "supported_granularity",
                   f"one of {['auto', *GRANULARITIES]}")
    return str(g)


def _out(v: Any) -> Any:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(v, date):
        return v.isoformat()
    return float(v) if v is not None and not isinstance(v, bool | int | float | str) else v


async def query_metrics(session: AsyncSession, t: Tables, project_id: str, raw: str, *, v2: bool
                        ) -> dict[str, Any]:
    try:
        q = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("query", "json", "a JSON object (URL-encoded)", "query is not valid JSON") from None
    if not isinstance(q, dict):
        raise _bad("query", "object", "a JSON object")
    allowed = V2_VIEWS if v2 else V1_VIEWS
    view_name = q.get("view")
    if view_name not in allowed:
        raise _bad("query.view", "supported_view", f"one of {list(allowed)}", f"unknown view {view_name!r}")
    view = _views(t, project_id)[str(view_name)]()
    from_ts = _parse_ts(q.get("fromTimestamp"), "fromTimestamp")
    to_ts = _parse_ts(q.get("toTimestamp"), "toTimestamp")
    if to_ts <= from_ts:
        raise _bad("query.toTimestamp", "after", "must be after fromTimestamp")

    dims = q.get("dimensions") or []
    if not isinstance(dims, list):
        raise _bad("query.dimensions", "list", "a list of {field}")
    group_cols: list[tuple[str, ColumnElement[Any]]] = []
    for i, d in enumerate(dims):
        name = d.get("field") if isinstance(d, dict) else None
        if not isinstance(name, str) or name not in view.dimensions:
            raise _bad(f"query.dimensions[{i}].field", "supported_dimension",
                       f"one of {sorted(view.dimensions)}", f"unknown dimension {name!r} for view {view_name}")
        if v2 and name in view.high_cardinality:
            raise _bad(f"query.dimensions[{i}].field", "high_cardinality",
                       f"{name} cannot be grouped by in v2; filter on it instead")
        group_cols.append((name, view.dimensions[name]))

    metrics = q.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise _bad("query.metrics", "required", "at least one {measure, aggregation}")
    selected: list[tuple[str, ColumnElement[Any]]] = []
    for i, m in enumerate(metrics):
        measure = m.get("measure") if isinstance(m, dict) else None
        agg = m.get("aggregation") if isinstance(m, dict) else None
        if not isinstance(measure, str) or (measure not in view.measures and measure not in view.distinct):
            raise _bad(f"query.metrics[{i}].measure", "supported_measure",
                       f"one of {sorted([*view.measures, *view.distinct])}",
                       f"unknown measure {measure!r} for view {view_name}")
        if agg == "histogram":
            raise _bad(f"query.metrics[{i}].aggregation", "not_supported", "histogram is not supported by Tally")
        if agg not in AGGREGATIONS:
            raise _bad(f"query.metrics[{i}].aggregation", "supported_aggregation", f"one of {list(AGGREGATIONS)}")
        expr: ColumnElement[Any]
        if measure in view.distinct:
            expr = func.count(view.distinct[measure].distinct())
        elif measure == "count" and agg in ("count", "sum"):
            expr = func.count()
        else:
            expr = _aggregate(agg, view.measures[measure])
        selected.append((f"{agg}_{measure}", expr))

    conds = [*view.where, view.time >= from_ts, view.time <= to_ts]
    filters = q.get("filters") or []
    if not isinstance(filters, list):
        raise _bad("query.filters", "list", "a list of filter objects")
    conds += [_filter(view, i, f) for i, f in enumerate(filters)]

    # Grouped by output names: an expression with bound parameters (coalesce(x, 'default')) would not be seen
    # as the same expression twice.
    cols: list[ColumnElement[Any]] = [c.label(f"d{i}") for i, (_, c) in enumerate(group_cols)]
    group_by: list[Any] = [literal_column(f"d{i}") for i in range(len(group_cols))]
    tdim = q.get("timeDimension")
    time_col = None
    if tdim is not None:
        granularity = _granularity(tdim, from_ts, to_ts)
        time_col = func.date_trunc(granularity, func.timezone("UTC", view.time))
        cols.append(time_col.label("time_dimension"))
        group_by.append(literal_column("time_dimension"))
    cols += [e.label(f"m{i}") for i, (_, e) in enumerate(selected)]
    stmt = select(*cols).select_from(view.source).where(*conds)
    if group_by:
        stmt = stmt.group_by(*group_by)

    aliases = {name: f"d{i}" for i, (name, _) in enumerate(group_cols)}
    aliases |= {alias: f"m{i}" for i, (alias, _) in enumerate(selected)}
    if time_col is not None:
        aliases["time_dimension"] = "time_dimension"
    order = q.get("orderBy") or []
    if not isinstance(order, list):
        raise _bad("query.orderBy", "list", "a list of {field, direction}")
    order_by: list[Any] = []
    for i, ob in enumerate(order):
        fname = ob.get("field") if isinstance(ob, dict) else None
        direction = ob.get("direction", "asc") if isinstance(ob, dict) else None
        if fname not in aliases or direction not in ("asc", "desc"):
            raise _bad(f"query.orderBy[{i}]", "supported_order",
                       f"field one of {sorted(aliases)}, direction asc or desc")
        c: ColumnElement[Any] = literal_column(aliases[fname])
        order_by.append(c.asc() if direction == "asc" else c.desc())
    if not order_by:
        order_by = [literal_column("time_dimension").asc()] if time_col is not None else []
        order_by.append(literal_column("m0").desc())
    order_by += [literal_column(f"d{i}").asc() for i in range(len(group_cols))]

    config: dict[str, Any] = q["config"] if isinstance(q.get("config"), dict) else {}
    limit = config.get("row_limit", DEFAULT_ROWS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise _bad("query.config.row_limit", "range", f"an integer from 1 to {MAX_ROWS}")
    rows = (await session.execute(stmt.order_by(*order_by).limit(limit))).mappings().all()
    data = []
    for r in rows:
        item = {name: _out(r[f"d{i}"]) for i, (name, _) in enumerate(group_cols)}
        if time_col is not None:
            item["time_dimension"] = _out(r["time_dimension"])
        item |= {alias: _out(r[f"m{i}"]) for i, (alias, _) in enumerate(selected)}
        data.append(item)
    return {"data": data}


# -- daily metrics (v1) ------------------------------------------------------------------------------------------

async def daily_metrics(session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int,
                        trace_name: str | None, user_id: str | None, tags: Sequence[str],
                        environment: Sequence[str], from_ts: datetime | None, to_ts: datetime | None
                        ) -> dict[str, Any]:
    """DailyMetrics: per UTC day of the trace timestamp, newest first: trace and observation counts, cost, and
    usage per model."""
    tr, o = t.traces, t.observations
    day = func.to_char(func.timezone("UTC", tr.c.sort_ts), "YYYY-MM-DD")
    conds: list[ColumnElement[Any]] = [tr.c.project_id == project_id]
    if trace_name is not None:
        conds.append(tr.c.name == trace_name)
    if user_id is not None:
        conds.append(tr.c.user_id == user_id)
    if tags:
        conds.append(tr.c.tags.op("@>")(cast(literal(orjson.dumps(list(tags)).decode()), JSONB)))
    if environment:
        conds.append(func.coalesce(tr.c.environment, "default").in_(list(environment)))
    if from_ts is not None:
        conds.append(tr.c.sort_ts >= from_ts)
    if to_ts is not None:
        conds.append(tr.c.sort_ts < to_ts)
    days_q = (select(day.label("day"), func.count().label("n")).where(*conds).group_by(literal_column("day"))
              .subquery())
    total = (await session.execute(select(func.count()).select_from(days_q))).scalar_one()
    days = (await session.execute(select(days_q).order_by(days_q.c.day.desc()).limit(limit)
                                  .offset((page - 1) * limit))).mappings().all()
    wanted = [d["day"] for d in days]
    cost = func.coalesce(_num(o.c.cost_details["total"]),
                         _num(o.c.cost_details["input"]) + _num(o.c.cost_details["output"]))
    inp, out = _num(o.c.usage_details["input"]), _num(o.c.usage_details["output"])
    tot = func.coalesce(_num(o.c.usage_details["total"]), func.coalesce(inp, 0) + func.coalesce(out, 0))
    model = o.c.model
    per_model: dict[str, list[dict[str, Any]]] = {}
    if wanted:
        rows = (await session.execute(
            select(day.label("day"), model.label("model"), func.count().label("obs"),
                   func.count(o.c.trace_id.distinct()).label("traces"),
                   *(_as_double(func.coalesce(func.sum(x), 0)).label(name)
                     for name, x in (("cost", cost), ("inp", inp), ("out", out), ("tot", tot))))
            .select_from(o.join(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id)))
            .where(*conds, day.in_(wanted))
            .group_by(literal_column("day"), literal_column("model"))
            .order_by(literal_column("day"), literal_column("model")))).mappings().all()
        for r in rows:
            per_model.setdefault(r["day"], []).append({
                "model": r["model"], "inputUsage": _whole(r["inp"]), "outputUsage": _whole(r["out"]),
                "totalUsage": _whole(r["tot"]), "countTraces": r["traces"], "countObservations": r["obs"],
                "totalCost": r["cost"]})
    data = []
    for d in days:
        usage = per_model.get(d["day"], [])
        data.append({"date": d["day"], "countTraces": d["n"],
                     "countObservations": sum(u["countObservations"] for u in usage),
                     "totalCost": math.fsum(u["totalCost"] for u in usage if u["totalCost"] is not None),
                     "usage": usage})
    return {"data": data, "meta": {"page": page, "limit": limit, "totalItems": total,
                                   "totalPages": (total + limit - 1) // limit}}

