"""Langfuse's metrics API over the read models: the query object of ``GET /api/public/metrics`` (v1) and
``GET /api/public/v2/metrics``, and the daily metrics of ``GET /api/public/metrics/daily``.

Every view, dimension, measure, aggregation, filter column and operator is looked up in the whitelists below;
the query is checked here into a ``MetricsQuery`` of known names, which ``adapters/queries/metrics.py`` turns
into SQL (user input only ever reaches the database as bound parameters). Anything not in the lists is a 400
naming the field and what it may be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson

from projections.domain.errors import Unsupported

MAX_ROWS = 1000
DEFAULT_ROWS = 100
AGGREGATIONS = ("sum", "avg", "count", "max", "min", "p50", "p75", "p90", "p95", "p99")
PERCENTILES = {"p50": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99}
GRANULARITIES = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
                 "week": timedelta(weeks=1), "month": timedelta(days=30)}


@dataclass(frozen=True)
class ViewFields:
    """The names a view offers: dimensions (group by, filter), measures, measures counted as distinct values
    (uniqueUserIds), dimensions v2 refuses to group by, and filter-only JSONB arrays (tags) and objects
    (metadata)."""

    dimensions: frozenset[str]
    measures: frozenset[str]
    distinct: frozenset[str] = frozenset()
    high_cardinality: frozenset[str] = frozenset()
    arrays: frozenset[str] = frozenset({"tags"})
    objects: frozenset[str] = frozenset({"metadata"})


_SCORE_DIMENSIONS = frozenset({"id", "traceId", "userId", "sessionId", "observationId", "environment", "name",
                               "source", "dataType", "configId", "traceName", "traceRelease", "traceVersion",
                               "timestampMonth", "timestampDay"})
_SCORE_HIGH = frozenset({"id", "traceId", "userId", "sessionId", "observationId"})
VIEWS: dict[str, ViewFields] = {
    "traces": ViewFields(
        dimensions=frozenset({"id", "name", "userId", "sessionId", "release", "version", "environment",
                              "timestampMonth", "timestampDay"}),
        measures=frozenset({"count", "observationsCount", "scoresCount", "latency", "totalTokens", "totalCost"}),
        distinct=frozenset({"uniqueUserIds", "uniqueSessionIds"})),
    "observations": ViewFields(
        dimensions=frozenset({"id", "traceId", "userId", "sessionId", "parentObservationId", "environment", "type",
                              "name", "level", "version", "release", "traceName", "traceRelease", "traceVersion",
                              "providedModelName", "isRootObservation", "startTimeMonth"}),
        measures=frozenset({"count", "latency", "streamingLatency", "timeToFirstToken", "inputTokens",
                            "outputTokens", "totalTokens", "inputCost", "outputCost", "totalCost"}),
        high_cardinality=frozenset({"id", "traceId", "userId", "sessionId", "parentObservationId"})),
    "scores-numeric": ViewFields(dimensions=_SCORE_DIMENSIONS | {"value"}, measures=frozenset({"count", "value"}),
                                 high_cardinality=_SCORE_HIGH),
    "scores-boolean": ViewFields(dimensions=_SCORE_DIMENSIONS | {"booleanValue"},
                                 measures=frozenset({"count", "value"}), high_cardinality=_SCORE_HIGH),
    "scores-categorical": ViewFields(dimensions=_SCORE_DIMENSIONS | {"stringValue"}, measures=frozenset({"count"}),
                                     high_cardinality=_SCORE_HIGH),
}
V1_VIEWS = ("traces", "observations", "scores-numeric", "scores-categorical", "scores-boolean")
V2_VIEWS = ("observations", "scores-numeric", "scores-boolean", "scores-categorical")
SCALAR_OPERATORS = frozenset({"=", "<>", ">", "<", ">=", "<=", "contains", "does not contain", "starts with",
                              "ends with"})
_STRING_ONLY = frozenset({"contains", "does not contain", "starts with", "ends with"})


@dataclass(frozen=True)
class Metric:
    measure: str
    aggregation: str

    @property
    def alias(self) -> str:
        return f"{self.aggregation}_{self.measure}"


@dataclass(frozen=True)
class Filter:
    """One checked filter. ``kind``: "null" (is null / is not null on a dimension), "array" (any of / all of /
    none of on a JSONB array, ``value`` a list of strings), "object" (one ``key`` of a JSONB object, compared as
    a number when ``number``), "time" (the view's time) or "dimension"."""

    kind: str
    column: str
    operator: str
    value: Any = None
    key: str | None = None
    number: bool = False


@dataclass(frozen=True)
class MetricsQuery:
    """A checked query. Output columns: dimensions ``d0``, ``d1``..., ``time_dimension`` when ``granularity``,
    metrics ``m0``, ``m1``...; ``order`` is (output column, ascending) pairs."""

    view: str
    from_ts: datetime
    to_ts: datetime
    dimensions: tuple[str, ...]
    metrics: tuple[Metric, ...]
    filters: tuple[Filter, ...]
    granularity: str | None
    order: tuple[tuple[str, bool], ...]
    limit: int


@dataclass(frozen=True)
class DailyFilters:
    trace_name: str | None = None
    user_id: str | None = None
    tags: Sequence[str] = ()
    environment: Sequence[str] = ()
    from_ts: datetime | None = None
    to_ts: datetime | None = None


class MetricsReads(Protocol):
    async def query(self, project_id: str, q: MetricsQuery) -> list[dict[str, Any]]: ...

    async def day_page(self, project_id: str, f: DailyFilters, *, offset: int, limit: int
                       ) -> tuple[int, list[dict[str, Any]]]: ...

    async def usage_per_model(self, project_id: str, f: DailyFilters, days: Sequence[str]
                              ) -> list[dict[str, Any]]: ...


def _bad(field_: str, rule: str, message: str, summary: str | None = None) -> Unsupported:
    return Unsupported(field_, rule, message, summary)


def _whole(value: float | None) -> int | float | None:
    """Token sums as integers, as Langfuse writes them, where an integer is what they are."""
    return int(value) if value is not None and math.isfinite(value) and abs(value) < 2**63 else value


def _parse_ts(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise _bad(f"query.{name}", "required", "an ISO 8601 date-time")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"query.{name}", "datetime", "an ISO 8601 date-time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _filter(view: ViewFields, i: int, f: Any) -> Filter:
    where = f"query.filters[{i}]"
    if not isinstance(f, dict):
        raise _bad(where, "object", "a filter object {column, operator, value, type}")
    column, op, value = f.get("column"), f.get("operator"), f.get("value")
    if op in ("is null", "is not null") and isinstance(column, str) and column in view.dimensions:
        return Filter("null", column, op)
    if isinstance(column, str) and column in view.arrays:
        vals = value if isinstance(value, list) else None
        if vals is None or not all(isinstance(v, str) for v in vals):
            raise _bad(f"{where}.value", "string_list", "a list of strings")
        if op in ("any of", "all of", "none of"):
            return Filter("array", column, op, vals)
        raise _bad(f"{where}.operator", "supported_operator", "any of, all of or none of")
    kind, key, number = "dimension", None, False
    if isinstance(column, str) and column in view.objects:
        key = f.get("key")
        if not isinstance(key, str) or not key:
            raise _bad(f"{where}.key", "required", "the metadata key to compare")
        kind, number = "object", f.get("type") == "numberObject"
    elif column == "timestamp" or column == "startTime":
        kind = "time"
        value = _parse_ts(value, f"filters[{i}].value")
    elif isinstance(column, str) and column in view.dimensions:
        if f.get("type") == "datetime":
            value = _parse_ts(value, f"filters[{i}].value")
    else:
        raise _bad(f"{where}.column", "supported_column",
                   f"one of {sorted([*view.dimensions, *view.arrays, *view.objects])}",
                   f"unknown filter column {column!r}")
    assert isinstance(column, str)
    if op in ("any of", "none of"):
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            raise _bad(f"{where}.value", "list", "a list of values")
        return Filter(kind, column, op, value, key, number)
    if op in ("is null", "is not null"):
        return Filter(kind, column, op, value, key, number)
    if not isinstance(op, str) or op not in SCALAR_OPERATORS:
        raise _bad(f"{where}.operator", "supported_operator",
                   f"one of {sorted([*SCALAR_OPERATORS, 'any of', 'none of', 'is null', 'is not null'])}")
    if op in _STRING_ONLY and not isinstance(value, str):
        raise _bad(f"{where}.value", "string", "a string")
    if not isinstance(value, str | int | float | bool | datetime):
        raise _bad(f"{where}.value", "scalar", "a string, number, boolean or date-time")
    return Filter(kind, column, op, value, key, number)


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


def parse_query(raw: str, *, v2: bool) -> MetricsQuery:
    """The query object checked against the whitelists, in the order Langfuse's fields are read; the first field
    that cannot be served is refused."""
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
    view = VIEWS[str(view_name)]
    from_ts = _parse_ts(q.get("fromTimestamp"), "fromTimestamp")
    to_ts = _parse_ts(q.get("toTimestamp"), "toTimestamp")
    if to_ts <= from_ts:
        raise _bad("query.toTimestamp", "after", "must be after fromTimestamp")

    dims = q.get("dimensions") or []
    if not isinstance(dims, list):
        raise _bad("query.dimensions", "list", "a list of {field}")
    group: list[str] = []
    for i, d in enumerate(dims):
        name = d.get("field") if isinstance(d, dict) else None
        if not isinstance(name, str) or name not in view.dimensions:
            raise _bad(f"query.dimensions[{i}].field", "supported_dimension",
                       f"one of {sorted(view.dimensions)}", f"unknown dimension {name!r} for view {view_name}")
        if v2 and name in view.high_cardinality:
            raise _bad(f"query.dimensions[{i}].field", "high_cardinality",
                       f"{name} cannot be grouped by in v2; filter on it instead")
        group.append(name)

    metrics = q.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise _bad("query.metrics", "required", "at least one {measure, aggregation}")
    selected: list[Metric] = []
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
        selected.append(Metric(measure, str(agg)))

    filters = q.get("filters") or []
    if not isinstance(filters, list):
        raise _bad("query.filters", "list", "a list of filter objects")
    checked = tuple(_filter(view, i, f) for i, f in enumerate(filters))

    tdim = q.get("timeDimension")
    granularity = _granularity(tdim, from_ts, to_ts) if tdim is not None else None

    aliases = {name: f"d{i}" for i, name in enumerate(group)}
    aliases |= {m.alias: f"m{i}" for i, m in enumerate(selected)}
    if granularity is not None:
        aliases["time_dimension"] = "time_dimension"
    order = q.get("orderBy") or []
    if not isinstance(order, list):
        raise _bad("query.orderBy", "list", "a list of {field, direction}")
    order_by: list[tuple[str, bool]] = []
    for i, ob in enumerate(order):
        fname = ob.get("field") if isinstance(ob, dict) else None
        direction = ob.get("direction", "asc") if isinstance(ob, dict) else None
        if fname not in aliases or direction not in ("asc", "desc"):
            raise _bad(f"query.orderBy[{i}]", "supported_order",
                       f"field one of {sorted(aliases)}, direction asc or desc")
        order_by.append((aliases[str(fname)], direction == "asc"))
    if not order_by:
        order_by = [("time_dimension", True)] if granularity is not None else []
        order_by.append(("m0", False))
    order_by += [(f"d{i}", True) for i in range(len(group))]

    config: dict[str, Any] = q["config"] if isinstance(q.get("config"), dict) else {}
    limit = config.get("row_limit", DEFAULT_ROWS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise _bad("query.config.row_limit", "range", f"an integer from 1 to {MAX_ROWS}")
    return MetricsQuery(str(view_name), from_ts, to_ts, tuple(group), tuple(selected), checked, granularity,
                        tuple(order_by), limit)


async def query_metrics(store: MetricsReads, project_id: str, raw: str, *, v2: bool) -> dict[str, Any]:
    q = parse_query(raw, v2=v2)
    rows = await store.query(project_id, q)
    data = []
    for r in rows:
        item = {name: _out(r[f"d{i}"]) for i, name in enumerate(q.dimensions)}
        if q.granularity is not None:
            item["time_dimension"] = _out(r["time_dimension"])
        item |= {m.alias: _out(r[f"m{i}"]) for i, m in enumerate(q.metrics)}
        data.append(item)
    return {"data": data}


# -- daily metrics (v1) ------------------------------------------------------------------------------------------

async def daily_metrics(store: MetricsReads, project_id: str, *, page: int, limit: int, filters: DailyFilters
                        ) -> dict[str, Any]:
    """DailyMetrics: per UTC day of the trace timestamp, newest first: trace and observation counts, cost, and
    usage per model."""
    total, days = await store.day_page(project_id, filters, offset=(page - 1) * limit, limit=limit)
    wanted = [d["day"] for d in days]
    per_model: dict[str, list[dict[str, Any]]] = {}
    if wanted:
        for r in await store.usage_per_model(project_id, filters, wanted):
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
