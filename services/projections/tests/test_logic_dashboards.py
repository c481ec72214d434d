"""Queue progress and score analytics over an in-memory store (no database): which source serves a query
(the rollup, or counting the scores), the statistics and the answers' shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from projections.application import dashboards
from projections.application.dashboards import ScoreFilter
from projections.domain.errors import Invalid, NotFound

from .fakes import Calls, T

COUNTS = {"total": 4, "completed": 1, "in_progress": 1, "skipped": 1, "pending": 1, "flagged": 0, "removed": 2}


class FakeDashboardReads(Calls):
    def __init__(self, *, rollup: tuple[list[Any], list[Any]] = ([], []), categories: Sequence[Any] = (),
                 scores: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__()
        self.rollup, self.categories, self.score_rows = rollup, list(categories), list(scores)

    async def queues(self, project_id: str) -> list[dict[str, Any]]:
        return [{"id": "q1", "name": "first", "created": True, "data": {"reviewers_per_item": 2}},
                {"id": "q2", "name": None, "created": False, "data": None}]

    async def item_counts_by_queue(self, project_id: str) -> dict[str, dict[str, int]]:
        return {"q1": dict(COUNTS)}

    async def queue(self, project_id: str, queue_id: str) -> dict[str, Any] | None:
        return {"id": queue_id, "name": "first", "created": True, "data": {}} if queue_id == "q1" else None

    async def item_counts(self, project_id: str, queue_id: str) -> dict[str, int]:
        return dict(COUNTS)

    async def reviewers(self, project_id: str, queue_id: str) -> list[dict[str, Any]]:
        return [{"reviewer": "alice", "completed": 1}]

    async def reviews_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]:
        self.saw("reviews_completed_per", unit)
        return {T: 2, T + timedelta(hours=2): 1}

    async def items_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]:
        return {T + timedelta(hours=1): 1, T + timedelta(hours=2): 1}

    async def rollup_sums(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                          ) -> tuple[list[Any], list[Any]]:
        self.saw("rollup_sums", dim, f, bucket)
        return self.rollup

    async def rollup_categories(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                                ) -> list[Any]:
        self.saw("rollup_categories", dim, f, bucket)
        return self.categories

    async def scores(self, project_id: str, dims: Sequence[tuple[str, str]], f: ScoreFilter, limit: int
                     ) -> Sequence[Mapping[Any, Any]]:
        self.saw("scores", list(dims), f, limit)
        return self.score_rows[:limit]


async def test_queue_progress_rows_and_throughput() -> None:
    store = FakeDashboardReads()
    q1, q2 = await dashboards.queues_progress(store, "p")
    assert q1["items"] == COUNTS and q1["total_items"] == 4 and q1["completion_rate"] == 0.25
    assert q1["reviewers_per_item"] == 2 and q1["known"] is True and q1["score_config_ids"] == []
    assert q2["total_items"] == 0 and q2["completion_rate"] is None and q2["known"] is False  # no items yet

    out = await dashboards.queue_progress(store, "p", "q1", bucket="minute")
    assert store.asked("reviews_completed_per") == [(("day",), {})]  # anything but hour is by the day
    assert out["reviewers"] == [{"reviewer": "alice", "completed": 1}]
    assert out["throughput"]["points"] == [
        {"bucket": T, "reviews_completed": 2, "items_completed": 0},
        {"bucket": T + timedelta(hours=1), "reviews_completed": 0, "items_completed": 1},
        {"bucket": T + timedelta(hours=2), "reviews_completed": 1, "items_completed": 1},
    ]
    with pytest.raises(NotFound):
        await dashboards.queue_progress(store, "p", "nope")


def _args(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"bucket": "day", "names": [], "config_id": None, "source": None, "data_type": None,
                            "from_ts": None, "to_ts": None, "trace_name": None, "tags": [], "environment": None,
                            "release": None, "user_id": None, "bins": 10}
    return base | kw


async def test_analytics_serves_from_the_rollup_when_it_has_the_rows() -> None:
    per_bucket = [("q", "ANNOTATION", "", "NUMERIC", T, "", 2, 2, Decimal(6), Decimal(20)),
                  ("q", "ANNOTATION", "", "NUMERIC", T + timedelta(days=1), "", 1, 1, Decimal(5), Decimal(25))]
    per_value = [("q", "ANNOTATION", "", "NUMERIC", None, "2", 1, 1, Decimal(2), Decimal(4)),
                 ("q", "ANNOTATION", "", "NUMERIC", None, "4", 1, 1, Decimal(4), Decimal(16)),
                 ("q", "ANNOTATION", "", "NUMERIC", None, "5", 1, 1, Decimal(5), Decimal(25))]
    store = FakeDashboardReads(rollup=(per_bucket, per_value))
    out = await dashboards.score_analytics(store, "p", **_args(environment="prod", data_type="NUMERIC"))
    assert out["served_from"] == "rollup" and out["filters"] == [{"dimension": "environment", "value": "prod"}]
    assert store.asked("rollup_sums")[0][0][0] == ("environment", "prod")
    assert not store.asked("rollup_categories")  # numeric only: no category counts to read
    (series,) = out["series"]
    assert series["count"] == 3 and series["mean"] == pytest.approx(11 / 3) and series["config_id"] is None
    assert [p["mean"] for p in series["buckets"]] == [3.0, 5.0]
    assert series["distribution"] == {"type": "histogram", "bins": [{"lower": v, "upper": v, "count": 1}
                                                                     for v in (2.0, 4.0, 5.0)]}

    await dashboards.score_analytics(store, "p", **_args())
    assert store.asked("rollup_sums")[-1][0][0] == ("", "") and store.asked("rollup_categories")


async def test_analytics_counts_the_scores_for_several_filters_or_one_by_the_hour() -> None:
    rows = [{"name": "tone", "source": "EVAL", "config_id": None, "data_type": "CATEGORICAL", "value": None,
             "string_value": lab, "string_values": None, "timestamp": T + timedelta(minutes=m)}
            for m, lab in ((1, "good"), (2, "bad"), (70, "good"))]
    store = FakeDashboardReads(scores=rows)
    out = await dashboards.score_analytics(store, "p", **_args(bucket="hour", tags=["a"]))
    assert out["served_from"] == "scores" and out["truncated"] is False
    assert store.asked("scores") and not store.asked("rollup_sums")
    (series,) = out["series"]
    assert series["distribution"] == {"type": "categories", "counts": {"bad": 1, "good": 2}}
    assert [(p["bucket"], p["categories"]) for p in series["buckets"]] == [
        (T, {"bad": 1, "good": 1}), (T + timedelta(hours=1), {"good": 1})]

    out = await dashboards.score_analytics(store, "p", **_args(trace_name="chat", user_id="u"), max_scan=2)
    assert store.asked("scores")[-1][0][0] == [("trace_name", "chat"), ("user", "u")]
    assert store.asked("scores")[-1][0][2] == 3  # one more than the cap: was there more?
    assert out["truncated"] is True and out["series"][0]["count"] == 2


async def test_analytics_refuses_an_unknown_bucket() -> None:
    with pytest.raises(Invalid):
        await dashboards.score_analytics(FakeDashboardReads(), "p", **_args(bucket="week"))


def test_histogram_bins_a_continuous_scale() -> None:
    rows = [("n", "API", "", "NUMERIC", T, str(v), 1, 1, Decimal(v), Decimal(v * v)) for v in range(20)]
    bins = dashboards._histogram(rows, 4)
    assert [b["count"] for b in bins] == [5, 5, 5, 5] and bins[0]["lower"] == 0 and bins[-1]["upper"] == 19
