"""SQL of Langfuse's metrics API: each view's dimensions, measures and filter columns as SQLAlchemy expressions,
and the statements of a checked query (``application.metrics.MetricsQuery``) and of the daily metrics. Every
name comes from the application's checked query; user input only ever reaches the database as bound
parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Float, Numeric, and_, case, cast, func, literal, literal_column, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from projections.adapters.tables import Tables
from projections.application.metrics import (
    PERCENTILES,
    DailyFilters,
    Filter,
    Metric,
    MetricsQuery,
    ViewFields,
)


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

    def fields(self) -> ViewFields:
        """The names this view offers (what the application checks a query against)."""
        return ViewFields(frozenset(self.dimensions), frozenset(self.measures), frozenset(self.distinct),
                          self.high_cardinality, frozenset(self.arrays), frozenset(self.objects))


def views(t: Tables, project_id: str) -> dict[str, Callable[[], View]]:
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


_SCALAR_OPS: dict[str, Callable[[Any, Any], ColumnElement[Any]]] = {
    "=": lambda c, v: c == v, "<>": lambda c, v: c != v, ">": lambda c, v: c > v, "<": lambda c, v: c < v,
    ">=": lambda c, v: c >= v, "<=": lambda c, v: c <= v,
    "contains": lambda c, v: c.contains(v, autoescape=True),
    "does not contain": lambda c, v: ~c.contains(v, autoescape=True),
    "starts with": lambda c, v: c.startswith(v, autoescape=True),
    "ends with": lambda c, v: c.endswith(v, autoescape=True),
}


def _condition(view: View, f: Filter) -> ColumnElement[Any]:
    if f.kind == "null":
        col = view.dimensions[f.column]
        return col.is_(None) if f.operator == "is null" else col.isnot(None)
    if f.kind == "array":
        arr = func.coalesce(view.arrays[f.column], cast(literal("[]"), JSONB))
        vals = f.value
        if f.operator == "any of":
            return or_(*[arr.op("?")(v) for v in vals]) if vals else literal(False)
        if f.operator == "all of":
            return arr.op("@>")(cast(literal(orjson.dumps(vals).decode()), JSONB))
        return ~or_(*[arr.op("?")(v) for v in vals]) if vals else literal(True)  # none of
    if f.kind == "object":
        col = view.objects[f.column][f.key].astext
        if f.number:
            col = cast(col, Float)
    elif f.kind == "time":
        col = view.time
    else:
        col = view.dimensions[f.column]
    if f.operator in ("any of", "none of"):
        cond = col.in_(f.value) if f.value else literal(False)
        return cond if f.operator == "any of" else ~cond
    if f.operator in ("is null", "is not null"):
        return col.is_(None) if f.operator == "is null" else col.isnot(None)
    return _SCALAR_OPS[f.operator](col, f.value)


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


def _metric(view: View, m: Metric) -> ColumnElement[Any]:
    if m.measure in view.distinct:
        return func.count(view.distinct[m.measure].distinct())
    if m.measure == "count" and m.aggregation in ("count", "sum"):
        return func.count()
    return _aggregate(m.aggregation, view.measures[m.measure])


class SqlMetricsReads:
    def __init__(self, session: AsyncSession, tables: Tables) -> None:
        self.session, self.t = session, tables

    async def query(self, project_id: str, q: MetricsQuery) -> list[dict[str, Any]]:
        """One row per group: the dimensions as ``d0``, ``d1``..., the time bucket as ``time_dimension``, the
        metrics as ``m0``, ``m1``..."""
        view = views(self.t, project_id)[q.view]()
        conds = [*view.where, view.time >= q.from_ts, view.time <= q.to_ts, *(_condition(view, f) for f in q.filters)]
        # Grouped by output names: an expression with bound parameters (coalesce(x, 'default')) would not be seen
        # as the same expression twice.
        cols: list[ColumnElement[Any]] = [view.dimensions[d].label(f"d{i}") for i, d in enumerate(q.dimensions)]
        group_by: list[Any] = [literal_column(f"d{i}") for i in range(len(q.dimensions))]
        if q.granularity is not None:
            cols.append(func.date_trunc(q.granularity, func.timezone("UTC", view.time)).label("time_dimension"))
            group_by.append(literal_column("time_dimension"))
        cols += [_metric(view, m).label(f"m{i}") for i, m in enumerate(q.metrics)]
        stmt = select(*cols).select_from(view.source).where(*conds)
        if group_by:
            stmt = stmt.group_by(*group_by)
        order_by: list[Any] = [literal_column(label).asc() if asc else literal_column(label).desc()
                               for label, asc in q.order]
        return [dict(r) for r in (await self.session.execute(stmt.order_by(*order_by).limit(q.limit))).mappings()]

    # -- daily metrics

    def _daily_conds(self, project_id: str, f: DailyFilters) -> list[ColumnElement[Any]]:
        tr = self.t.traces
        conds: list[ColumnElement[Any]] = [tr.c.project_id == project_id]
        if f.trace_name is not None:
            conds.append(tr.c.name == f.trace_name)
        if f.user_id is not None:
            conds.append(tr.c.user_id == f.user_id)
        if f.tags:
            conds.append(tr.c.tags.op("@>")(cast(literal(orjson.dumps(list(f.tags)).decode()), JSONB)))
        if f.environment:
            conds.append(func.coalesce(tr.c.environment, "default").in_(list(f.environment)))
        if f.from_ts is not None:
            conds.append(tr.c.sort_ts >= f.from_ts)
        if f.to_ts is not None:
            conds.append(tr.c.sort_ts < f.to_ts)
        return conds

    def _day(self) -> ColumnElement[Any]:
        return func.to_char(func.timezone("UTC", self.t.traces.c.sort_ts), "YYYY-MM-DD")

    async def day_page(self, project_id: str, f: DailyFilters, *, offset: int, limit: int
                       ) -> tuple[int, list[dict[str, Any]]]:
        """How many UTC days have traces, and one page of them newest first: ``day`` and trace count ``n``."""
        days_q = (select(self._day().label("day"), func.count().label("n")).where(*self._daily_conds(project_id, f))
                  .group_by(literal_column("day")).subquery())
        total = (await self.session.execute(select(func.count()).select_from(days_q))).scalar_one()
        days = (await self.session.execute(select(days_q).order_by(days_q.c.day.desc()).limit(limit)
                                           .offset(offset))).mappings().all()
        return total, [dict(d) for d in days]

    async def usage_per_model(self, project_id: str, f: DailyFilters, days: Sequence[str]) -> list[dict[str, Any]]:
        """Per day and model: observations ``obs``, traces, and the sums of cost, input, output and total usage
        (``cost``, ``inp``, ``out``, ``tot``) as doubles."""
        tr, o = self.t.traces, self.t.observations
        day = self._day()
        cost = func.coalesce(_num(o.c.cost_details["total"]),
                             _num(o.c.cost_details["input"]) + _num(o.c.cost_details["output"]))
        inp, out = _num(o.c.usage_details["input"]), _num(o.c.usage_details["output"])
        tot = func.coalesce(_num(o.c.usage_details["total"]), func.coalesce(inp, 0) + func.coalesce(out, 0))
        rows = (await self.session.execute(
            select(day.label("day"), o.c.model.label("model"), func.count().label("obs"),
                   func.count(o.c.trace_id.distinct()).label("traces"),
                   *(_as_double(func.coalesce(func.sum(x), 0)).label(name)
                     for name, x in (("cost", cost), ("inp", inp), ("out", out), ("tot", tot))))
            .select_from(o.join(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id)))
            .where(*self._daily_conds(project_id, f), day.in_(list(days)))
            .group_by(literal_column("day"), literal_column("model"))
            .order_by(literal_column("day"), literal_column("model")))).mappings().all()
        return [dict(r) for r in rows]
