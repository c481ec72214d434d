"""Langfuse's metrics query checked without a database: the whitelists, the order in which fields are refused,
the default ordering, and the answers' shape; and that the SQL views offer exactly the names checked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from projections import SCHEMA
from projections.adapters.queries.metrics import views
from projections.adapters.tables import make_tables
from projections.application import metrics
from projections.application.metrics import DailyFilters, Filter, Metric, MetricsQuery
from projections.domain.errors import Unsupported

from .fakes import Calls, T

WINDOW = {"fromTimestamp": "2026-03-01T00:00:00Z", "toTimestamp": "2026-03-03T00:00:00Z"}


def q(**kw: Any) -> str:
    return orjson.dumps({"view": "observations", **WINDOW, "metrics": [{"measure": "count", "aggregation": "count"}]}
                        | kw).decode()


def test_the_sql_views_offer_exactly_the_checked_names() -> None:
    built = views(make_tables(SCHEMA), "p")
    assert set(built) == set(metrics.VIEWS)
    for name, make in built.items():
        assert make().fields() == metrics.VIEWS[name], name


def test_a_query_becomes_known_names_and_a_full_order() -> None:
    parsed = metrics.parse_query(q(
        dimensions=[{"field": "name"}, {"field": "environment"}],
        metrics=[{"measure": "totalCost", "aggregation": "sum"}, {"measure": "latency", "aggregation": "p95"}],
        filters=[{"column": "tags", "operator": "any of", "value": ["a"]},
                 {"column": "metadata", "key": "k", "operator": ">", "value": 3, "type": "numberObject"},
                 {"column": "startTime", "operator": ">=", "value": "2026-03-02T09:00:00Z"},
                 {"column": "level", "operator": "is null"}],
        timeDimension={"granularity": "auto"}, config={"row_limit": 7}), v2=True)
    assert parsed == MetricsQuery(
        view="observations", from_ts=datetime.fromisoformat("2026-03-01T00:00:00+00:00"),
        to_ts=datetime.fromisoformat("2026-03-03T00:00:00+00:00"), dimensions=("name", "environment"),
        metrics=(Metric("totalCost", "sum"), Metric("latency", "p95")),
        filters=(Filter("array", "tags", "any of", ["a"]), Filter("object", "metadata", ">", 3, "k", True),
                 Filter("time", "startTime", ">=", T), Filter("null", "level", "is null")),
        granularity="hour",  # 48 h / 50 points: the smallest step at least that long
        order=(("time_dimension", True), ("m0", False), ("d0", True), ("d1", True)), limit=7)
    asked = metrics.parse_query(q(dimensions=[{"field": "name"}], orderBy=[{"field": "name", "direction": "desc"},
                                                                           {"field": "count_count"}]), v2=True)
    assert asked.order == (("d0", False), ("m0", True), ("d0", True))


@pytest.mark.parametrize(("query", "v2", "field"), [
    ("nope", True, "query"),
    ("[]", True, "query"),
    (q(view="traces"), True, "query.view"),  # v2 has no traces view
    (q(toTimestamp="2026-03-01T00:00:00Z"), True, "query.toTimestamp"),
    (q(fromTimestamp=5), True, "query.fromTimestamp"),
    (q(dimensions=[{"field": "traceId"}]), True, "query.dimensions[0].field"),  # high cardinality in v2
    (q(dimensions=[{"field": "nope"}]), False, "query.dimensions[0].field"),
    (q(metrics=[]), True, "query.metrics"),
    (q(metrics=[{"measure": "count", "aggregation": "histogram"}]), True, "query.metrics[0].aggregation"),
    (q(metrics=[{"measure": "uniqueUserIds", "aggregation": "count"}]), True, "query.metrics[0].measure"),
    (q(filters=[{"column": "tags", "operator": "=", "value": ["a"]}]), True, "query.filters[0].operator"),
    (q(filters=[{"column": "tags", "operator": "any of", "value": "a"}]), True, "query.filters[0].value"),
    (q(filters=[{"column": "metadata", "operator": "=", "value": "a"}]), True, "query.filters[0].key"),
    (q(filters=[{"column": "name", "operator": "contains", "value": 3}]), True, "query.filters[0].value"),
    (q(filters=[{"column": "name", "operator": "~", "value": "a"}]), True, "query.filters[0].operator"),
    (q(filters=[{"column": "input", "operator": "=", "value": "a"}]), True, "query.filters[0].column"),
    (q(timeDimension={"granularity": "year"}), True, "query.timeDimension.granularity"),
    (q(orderBy=[{"field": "nope"}]), True, "query.orderBy[0]"),
    (q(config={"row_limit": 1001}), True, "query.config.row_limit"),
    # the first field that cannot be served is the one named
    (q(dimensions=[{"field": "nope"}], config={"row_limit": 0}), True, "query.dimensions[0].field"),
])
def test_a_query_that_cannot_be_served_names_its_field(query: str, v2: bool, field: str) -> None:
    with pytest.raises(Unsupported) as exc:
        metrics.parse_query(query, v2=v2)
    assert exc.value.problems()[0]["field"] == field


class FakeMetricsReads(Calls):
    def __init__(self, rows: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self.rows = list(rows)

    async def query(self, project_id: str, q: MetricsQuery) -> list[dict[str, Any]]:
        self.saw("query", q)
        return self.rows

    async def day_page(self, project_id: str, f: DailyFilters, *, offset: int, limit: int
                       ) -> tuple[int, list[dict[str, Any]]]:
        self.saw("day_page", f, offset=offset, limit=limit)
        days = [{"day": "2026-03-02", "n": 3}, {"day": "2026-03-01", "n": 1}]
        return 5, days

    async def usage_per_model(self, project_id: str, f: DailyFilters, days: Sequence[str]) -> list[dict[str, Any]]:
        self.saw("usage_per_model", list(days))
        return [{"day": "2026-03-02", "model": "a", "obs": 2, "traces": 2, "cost": 0.1, "inp": 10.0, "out": 1e300,
                 "tot": None},
                {"day": "2026-03-02", "model": "b", "obs": 1, "traces": 1, "cost": 0.2, "inp": 1.0, "out": 2.0,
                 "tot": 3.0}]


async def test_rows_are_written_as_langfuse_does() -> None:
    store = FakeMetricsReads([{"d0": "chat", "time_dimension": datetime(2026, 3, 2, 9), "m0": Decimal("1.5"),
                               "m1": date(2026, 3, 2)}])
    out = await metrics.query_metrics(store, "p", q(
        view="traces", dimensions=[{"field": "name"}], timeDimension={"granularity": "hour"},
        metrics=[{"measure": "totalCost", "aggregation": "sum"}, {"measure": "count", "aggregation": "max"}]),
        v2=False)
    assert out == {"data": [{"name": "chat", "time_dimension": "2026-03-02T09:00:00Z", "sum_totalCost": 1.5,
                             "max_count": "2026-03-02"}]}


async def test_daily_metrics_sum_the_models_of_each_day() -> None:
    store = FakeMetricsReads()
    out = await metrics.daily_metrics(store, "p", page=2, limit=2, filters=DailyFilters(trace_name="chat"))
    assert store.asked("day_page")[0][1] == {"offset": 2, "limit": 2}
    assert store.asked("usage_per_model") == [((["2026-03-02", "2026-03-01"],), {})]
    day1, day2 = out["data"]
    assert day1["countTraces"] == 3 and day1["countObservations"] == 3
    assert day1["totalCost"] == pytest.approx(0.3)
    assert day1["usage"][0]["inputUsage"] == 10 and isinstance(day1["usage"][0]["inputUsage"], int)
    assert day1["usage"][0]["outputUsage"] == 1e300  # no integer holds it
    assert day2 == {"date": "2026-03-01", "countTraces": 1, "countObservations": 0, "totalCost": 0.0, "usage": []}
    assert out["meta"] == {"page": 2, "limit": 2, "totalItems": 5, "totalPages": 3}
