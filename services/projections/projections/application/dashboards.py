"""Queue progress and score analytics (served from the pre-aggregated rollup, or by counting the scores when the
rollup has no rows for the filters). The SQL is ``adapters/queries/dashboards.py``; here: which source serves a
query, and the statistics and shapes of the answers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from projections.domain.errors import Invalid, NotFound
from projections.domain.rollup import add_to, truncate, value_keys
from projections.domain.stats import mean_ci


@dataclass(frozen=True)
class ScoreFilter:
    names: Sequence[str] = ()
    config_id: str | None = None
    source: str | None = None
    data_type: str | None = None
    from_ts: datetime | None = None
    to_ts: datetime | None = None


class DashboardReads(Protocol):
    async def queues(self, project_id: str) -> list[dict[str, Any]]: ...

    async def item_counts_by_queue(self, project_id: str) -> dict[str, dict[str, int]]: ...

    async def queue(self, project_id: str, queue_id: str) -> dict[str, Any] | None: ...

    async def item_counts(self, project_id: str, queue_id: str) -> dict[str, int]: ...

    async def reviewers(self, project_id: str, queue_id: str) -> list[dict[str, Any]]: ...

    async def reviews_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]: ...

    async def items_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]: ...

    async def rollup_sums(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                          ) -> tuple[list[Any], list[Any]]: ...

    async def rollup_categories(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                                ) -> list[Any]: ...

    async def scores(self, project_id: str, dims: Sequence[tuple[str, str]], f: ScoreFilter, limit: int
                     ) -> Sequence[Mapping[Any, Any]]: ...


# -- queue progress --------------------------------------------------------------------------------------------


def _progress_row(q: dict[str, Any], counts: dict[str, int] | None) -> dict[str, Any]:
    c = counts or {"total": 0, "completed": 0, "in_progress": 0, "skipped": 0, "pending": 0, "flagged": 0,
                   "removed": 0}
    data = q.get("data") or {}
    return {
        "queue_id": q["id"],
        "name": q.get("name"),
        "known": bool(q.get("created")),
        "reviewers_per_item": data.get("reviewers_per_item"),
        "score_config_ids": data.get("score_config_ids", []),
        "is_archived": data.get("is_archived", False),
        "items": dict(c),
        "total_items": c["total"],
        "completed_items": c["completed"],
        "completion_rate": (c["completed"] / c["total"]) if c["total"] else None,
    }


async def queues_progress(store: DashboardReads, project_id: str) -> list[dict[str, Any]]:
    queues = await store.queues(project_id)
    counts = await store.item_counts_by_queue(project_id)
    return [_progress_row(q, counts.get(q["id"])) for q in queues]


async def queue_progress(store: DashboardReads, project_id: str, queue_id: str, *,
                         bucket: str = "hour") -> dict[str, Any]:
    q = await store.queue(project_id, queue_id)
    if q is None:
        raise NotFound(f"queue {queue_id!r} not found")
    out = _progress_row(q, await store.item_counts(project_id, queue_id))
    reviewers = await store.reviewers(project_id, queue_id)
    unit = "hour" if bucket == "hour" else "day"
    reviews_per = await store.reviews_completed_per(project_id, queue_id, unit)
    items_per = await store.items_completed_per(project_id, queue_id, unit)
    out["reviewers"] = reviewers
    out["throughput"] = {
        "bucket": unit,
        "points": [{"bucket": b, "reviews_completed": reviews_per.get(b, 0), "items_completed": items_per.get(b, 0)}
                   for b in sorted(set(reviews_per) | set(items_per))],
    }
    return out


# -- score analytics -------------------------------------------------------------------------------------------

Row = tuple[str, str, str, str, datetime, str, int, int, Decimal, Decimal]


def _series(rows: Iterable[Row], bins: int) -> list[dict[str, Any]]:
    """rows: (name, source, config_id, data_type, bucket, value_key, n, n_value, sum, sum_sq)."""
    groups: dict[tuple[str, str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r[0], r[1], r[2], r[3])].append(r)
    out = []
    for (name, source, config_id, data_type), rs in sorted(groups.items()):
        n = sum(r[6] for r in rs)
        nv = sum(r[7] for r in rs)
        s = float(sum((r[8] for r in rs), Decimal(0)))
        ss = float(sum((r[9] for r in rs), Decimal(0)))
        stats = mean_ci(nv, s, ss)
        buckets: dict[datetime, list[Any]] = {}
        for r in rs:
            b = buckets.setdefault(r[4], [0, 0, Decimal(0), {}])
            b[0] += r[6]
            b[1] += r[7]
            b[2] += r[8]
            if data_type != "NUMERIC":
                b[3][r[5]] = b[3].get(r[5], 0) + r[6]
        points = []
        for bk in sorted(buckets):
            b = buckets[bk]
            p: dict[str, Any] = {"bucket": bk, "count": b[0], "mean": float(b[2]) / b[1] if b[1] else None}
            if data_type != "NUMERIC":
                p["categories"] = dict(sorted(b[3].items()))
            points.append(p)
        series: dict[str, Any] = {
            "name": name, "source": source, "config_id": config_id or None, "data_type": data_type,
            "count": n, "mean": stats["mean"], "std": stats["std"], "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"], "buckets": points,
        }
        if data_type == "NUMERIC":
            series["distribution"] = {"type": "histogram", "bins": _histogram(rs, bins)}
        else:
            cats: dict[str, int] = defaultdict(int)
            for r in rs:
                cats[r[5]] += r[6]
            series["distribution"] = {"type": "categories", "counts": dict(sorted(cats.items()))}
        out.append(series)
    return out


def _series_grouped(per_bucket: Sequence[Any], per_value: Sequence[Any], per_cat_bucket: Sequence[Any],
                    bins: int) -> list[dict[str, Any]]:
    """The same shape as ``_series``, from rows already summed per bucket and per value key."""
    series: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in per_value:
        key = (row[0], row[1], row[2], row[3])
        series.setdefault(key, {"values": [], "buckets": [], "cats": defaultdict(dict)})["values"].append(row)
    for row in per_bucket:
        key = (row[0], row[1], row[2], row[3])
        series.setdefault(key, {"values": [], "buckets": [], "cats": defaultdict(dict)})["buckets"].append(row)
    for row in per_cat_bucket:
        series[(row[0], row[1], row[2], row[3])]["cats"][row[4]][row[5]] = int(row[6])
    out = []
    for (name, source, config_id, data_type), parts in sorted(series.items()):
        vals: list[Row] = parts["values"]
        bks = parts["buckets"]  # totals from the requested buckets; the distribution may span whole days
        n = int(sum(v[6] for v in bks))
        nv = int(sum(v[7] for v in bks))
        stats = mean_ci(nv, float(sum((v[8] for v in bks), Decimal(0))), float(sum((v[9] for v in bks), Decimal(0))))
        points = []
        for b in sorted(parts["buckets"], key=lambda x: x[4]):
            p: dict[str, Any] = {"bucket": b[4], "count": int(b[6]), "mean": float(b[8]) / int(b[7]) if b[7] else None}
            if data_type != "NUMERIC":
                p["categories"] = dict(sorted(parts["cats"].get(b[4], {}).items()))
            points.append(p)
        entry: dict[str, Any] = {
            "name": name, "source": source, "config_id": config_id or None, "data_type": data_type,
            "count": n, "mean": stats["mean"], "std": stats["std"], "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"], "buckets": points,
        }
        if data_type == "NUMERIC":
            entry["distribution"] = {"type": "histogram", "bins": _histogram(
                [(v[0], v[1], v[2], v[3], v[4], v[5], int(v[6]), int(v[7]), v[8], v[9]) for v in vals], bins)}
        else:
            entry["distribution"] = {"type": "categories",
                                     "counts": dict(sorted((v[5], int(v[6])) for v in vals))}
        out.append(entry)
    return out


def _histogram(rs: Sequence[Row], bins: int) -> list[dict[str, Any]]:
    vals: dict[float, int] = defaultdict(int)
    for r in rs:
        vals[float(r[5])] += r[6]
    if not vals:
        return []
    lo, hi = min(vals), max(vals)
    if lo == hi:
        return [{"lower": lo, "upper": hi, "count": sum(vals.values())}]
    distinct = sorted(vals)
    if len(distinct) <= bins:  # a discrete scale (1-5, 0-10): one bar per value
        return [{"lower": v, "upper": v, "count": vals[v]} for v in distinct]
    width = (hi - lo) / bins
    counts = [0] * bins
    for v, c in vals.items():
        counts[min(bins - 1, int((v - lo) / width))] += c
    return [{"lower": lo + i * width, "upper": lo + (i + 1) * width, "count": counts[i]} for i in range(bins)]


async def score_analytics(
    store: DashboardReads, project_id: str, *, bucket: str, names: Sequence[str],
    config_id: str | None, source: str | None, data_type: str | None, from_ts: datetime | None,
    to_ts: datetime | None, trace_name: str | None, tags: Sequence[str], environment: str | None,
    release: str | None, user_id: str | None, bins: int, max_scan: int = 200_000,
) -> dict[str, Any]:
    if bucket not in ("hour", "day"):
        raise Invalid("bucket", "enum", "hour | day", "bucket must be hour or day")
    given = [("trace_name", trace_name), ("environment", environment), ("release", release), ("user", user_id)]
    dims: list[tuple[str, str]] = [(k, v) for k, v in given if v is not None] + [("tag", tg) for tg in tags]
    f = ScoreFilter(names=names, config_id=config_id, source=source, data_type=data_type, from_ts=from_ts,
                    to_ts=to_ts)
    filters = [{"dimension": k, "value": v} for k, v in dims]
    if len(dims) == 0 or (len(dims) == 1 and bucket == "day"):
        dim = dims[0] if dims else ("", "")
        # Grouped reads instead of every row: per bucket and per value key (the distribution).
        per_bucket, per_value = await store.rollup_sums(project_id, dim, f, bucket)
        per_cat_bucket: list[Any] = []
        if data_type != "NUMERIC":
            per_cat_bucket = await store.rollup_categories(project_id, dim, f, bucket)
        return {"bucket": bucket, "served_from": "rollup", "truncated": False, "filters": filters,
                "series": _series_grouped(per_bucket, per_value, per_cat_bucket, bins)}
    # Several filters at once, or a filter by the hour: the rollup has no such rows, so count the matching
    # scores.
    deltas: dict[Any, list[Any]] = {}
    n = 0
    for row in await store.scores(project_id, dims, f, max_scan + 1):
        n += 1
        if n > max_scan:
            break
        b = truncate(row["timestamp"], bucket)
        add_to(deltas, (((row["name"], row["source"], row["config_id"] or "", row["data_type"], b, vk), v)
                        for vk, v in value_keys(row)), +1)
    scanned: list[Any] = [(*k, *m) for k, m in deltas.items()]
    return {"bucket": bucket, "served_from": "scores", "truncated": n > max_scan, "filters": filters,
            "series": _series(scanned, bins)}
