"""Queue progress and score analytics (served from the pre-aggregated rollup)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, func, literal, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters.tables import Tables
from projections.domain.errors import Invalid, NotFound
from projections.domain.rollup import add_to, truncate, value_keys
from projections.domain.stats import mean_ci

# -- queue progress --------------------------------------------------------------------------------------------


def _live_lease(qr: Any) -> Any:
    return and_(qr.c.completed_at.is_(None), qr.c.last_leased_at.isnot(None),
                or_(qr.c.last_ended_at.is_(None), qr.c.last_leased_at > qr.c.last_ended_at))


def _skipped_now(qr: Any) -> Any:
    return and_(qr.c.last_skipped_at.isnot(None),
                or_(qr.c.skip_undone_at.is_(None), qr.c.skip_undone_at < qr.c.last_skipped_at))


def _item_counts(qi: Any, qr: Any) -> list[Any]:
    """Each item in one bucket: completed; in progress (someone holds a live lease, or some but not all reviewers
    completed); skipped (only skipped so far); pending (the rest)."""
    live = qi.c.removed_at.is_(None)
    open_ = and_(live, qi.c.completed_at.is_(None))
    mine = and_(qr.c.project_id == qi.c.project_id, qr.c.queue_id == qi.c.queue_id, qr.c.item_id == qi.c.item_id)
    working = exists().where(mine, or_(_live_lease(qr), qr.c.completed_at.isnot(None)))
    skipped = exists().where(mine, _skipped_now(qr))
    return [
        func.count().filter(live).label("total"),
        func.count().filter(and_(live, qi.c.completed_at.isnot(None))).label("completed"),
        func.count().filter(and_(open_, working)).label("in_progress"),
        func.count().filter(and_(open_, ~working, skipped)).label("skipped"),
        func.count().filter(and_(open_, ~working, ~skipped)).label("pending"),
        func.count().filter(and_(live, qi.c.flagged_at.isnot(None))).label("flagged"),
        func.count().filter(qi.c.removed_at.isnot(None)).label("removed"),
    ]


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


async def queues_progress(session: AsyncSession, t: Tables, project_id: str) -> list[dict[str, Any]]:
    qq, qi, qr = t.queues, t.queue_items, t.queue_reviews
    queues = [dict(r) for r in (await session.execute(
        select(qq).where(qq.c.project_id == project_id).order_by(qq.c.name, qq.c.id))).mappings()]
    counts = {r["queue_id"]: dict(r) for r in (await session.execute(
        select(qi.c.queue_id, *_item_counts(qi, qr)).where(qi.c.project_id == project_id).group_by(qi.c.queue_id)
    )).mappings()}
    out = []
    for q in queues:
        c = counts.get(q["id"])
        out.append(_progress_row(q, {k: v for k, v in c.items() if k != "queue_id"} if c else None))
    return out


async def queue_progress(session: AsyncSession, t: Tables, project_id: str, queue_id: str, *,
                         bucket: str = "hour") -> dict[str, Any]:
    qq, qi, qr = t.queues, t.queue_items, t.queue_reviews
    q = (await session.execute(select(qq).where(qq.c.project_id == project_id, qq.c.id == queue_id))
         ).mappings().first()
    if q is None:
        raise NotFound(f"queue {queue_id!r} not found")
    c = (await session.execute(select(*_item_counts(qi, qr)).where(qi.c.project_id == project_id,
                                                               qi.c.queue_id == queue_id))).mappings().one()
    out = _progress_row(dict(q), dict(c))
    reviewers = [dict(r) for r in (await session.execute(
        select(
            qr.c.reviewer,
            func.count().filter(qr.c.completed_at.isnot(None)).label("completed"),
            func.count().filter(and_(qr.c.completed_at.is_(None), _skipped_now(qr))).label("skipped"),
            func.count().filter(qr.c.flagged_at.isnot(None)).label("flagged"),
            func.count().filter(_live_lease(qr)).label("in_progress"),
            func.min(qr.c.completed_at).label("first_completed_at"),
            func.max(qr.c.completed_at).label("last_completed_at"),
        ).where(qr.c.project_id == project_id, qr.c.queue_id == queue_id).group_by(qr.c.reviewer)
        .order_by(qr.c.reviewer)
    )).mappings()]
    unit = "hour" if bucket == "hour" else "day"
    reviews_per = {r[0]: r[1] for r in (await session.execute(
        select(func.date_trunc(unit, qr.c.completed_at, "UTC").label("b"), func.count())
        .where(qr.c.project_id == project_id, qr.c.queue_id == queue_id, qr.c.completed_at.isnot(None))
        .group_by(text("b")).order_by(text("b"))))}
    items_per = {r[0]: r[1] for r in (await session.execute(
        select(func.date_trunc(unit, qi.c.completed_at, "UTC").label("b"), func.count())
        .where(qi.c.project_id == project_id, qi.c.queue_id == queue_id, qi.c.completed_at.isnot(None),
               qi.c.removed_at.is_(None))
        .group_by(text("b")).order_by(text("b"))))}
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
    session: AsyncSession, t: Tables, project_id: str, *, bucket: str, names: Sequence[str],
    config_id: str | None, source: str | None, data_type: str | None, from_ts: datetime | None,
    to_ts: datetime | None, trace_name: str | None, tags: Sequence[str], environment: str | None,
    release: str | None, user_id: str | None, bins: int, max_scan: int = 200_000,
) -> dict[str, Any]:
    if bucket not in ("hour", "day"):
        raise Invalid("bucket", "enum", "hour | day", "bucket must be hour or day")
    given = [("trace_name", trace_name), ("environment", environment), ("release", release), ("user", user_id)]
    dims: list[tuple[str, str]] = [(k, v) for k, v in given if v is not None] + [("tag", tg) for tg in tags]
    r = t.score_rollup
    if len(dims) == 0 or (len(dims) == 1 and bucket == "day"):
        kind, value = dims[0] if dims else ("", "")
        base = [r.c.project_id == project_id, r.c.dim_kind == kind, r.c.dim_value == value]
        if names:
            base.append(r.c.name.in_(list(names)))
        if config_id is not None:
            base.append(r.c.config_id == config_id)
        if source is not None:
            base.append(r.c.source == source)
        if data_type is not None:
            base.append(r.c.data_type == data_type)
        if to_ts is not None:
            base.append(r.c.bucket < to_ts)
        conds = [*base, r.c.granularity == bucket]
        # distributions come from the day rows (hourly numeric rows carry no value key)
        day_conds = [*base, r.c.granularity == "day"]
        if from_ts is not None:
            conds.append(r.c.bucket >= from_ts)
            day_conds.append(r.c.bucket >= truncate(from_ts, "day"))
        series_cols = [r.c.name, r.c.source, r.c.config_id, r.c.data_type]
        sums = [func.sum(r.c.n), func.sum(r.c.n_value), func.sum(r.c.sum), func.sum(r.c.sum_sq)]
        # Grouped reads instead of every row: per bucket and per value key (the distribution).
        per_bucket: list[Any]
        per_value: list[Any]
        if bucket == "day":
            # one scan, two groupings: per bucket and per value key
            rows = (await session.execute(
                select(*series_cols, r.c.bucket, r.c.value_key, *sums, func.grouping(r.c.bucket).label("g"))
                .where(*conds)
                .group_by(func.grouping_sets(tuple_(*series_cols, r.c.bucket), tuple_(*series_cols, r.c.value_key)))
            )).all()
            per_bucket = [row[:10] for row in rows if row[10] == 0]
            per_value = [row[:10] for row in rows if row[10] == 1]
        else:
            per_bucket = list((await session.execute(
                select(*series_cols, r.c.bucket, literal("").label("vk"), *sums).where(*conds)
                .group_by(*series_cols, r.c.bucket))).all())
            per_value = list((await session.execute(
                select(*series_cols, literal(None).label("b"), r.c.value_key, *sums).where(*day_conds)
                .group_by(*series_cols, r.c.value_key))).all())
        per_cat_bucket: list[Any] = []
        if data_type != "NUMERIC":
            per_cat_bucket = list((await session.execute(
                select(*series_cols, r.c.bucket, r.c.value_key, func.sum(r.c.n))
                .where(*conds, r.c.data_type != "NUMERIC")
                .group_by(*series_cols, r.c.bucket, r.c.value_key))).all())
        return {"bucket": bucket, "served_from": "rollup", "truncated": False,
                "filters": [{"dimension": k, "value": v} for k, v in dims],
                "series": _series_grouped(per_bucket, per_value, per_cat_bucket, bins)}
    # Several filters at once, or a filter by the hour: the rollup has no such rows, so count the matching
    # scores.
    s = t.scores
    q2 = select(s.c.name, s.c.source, s.c.config_id, s.c.data_type, s.c.value, s.c.string_value,
                s.c.string_values, s.c.timestamp).where(s.c.project_id == project_id, ~s.c.deleted)
    for kind, value in dims:
        if kind == "tag":
            q2 = q2.where(s.c.rolled_dims["tag"].op("?")(value))
        else:
            q2 = q2.where(s.c.rolled_dims[kind].astext == value)
    if names:
        q2 = q2.where(s.c.name.in_(list(names)))
    if config_id is not None:
        q2 = q2.where(s.c.config_id == config_id)
    if source is not None:
        q2 = q2.where(s.c.source == source)
    if data_type is not None:
        q2 = q2.where(s.c.data_type == data_type)
    if from_ts is not None:
        q2 = q2.where(s.c.timestamp >= from_ts)
    if to_ts is not None:
        q2 = q2.where(s.c.timestamp < to_ts)
    deltas: dict[Any, list[Any]] = {}
    n = 0
    for row in (await session.execute(q2.limit(max_scan + 1))).mappings():
        n += 1
        if n > max_scan:
            break
        b = truncate(row["timestamp"], bucket)
        add_to(deltas, (((row["name"], row["source"], row["config_id"] or "", row["data_type"], b, vk), v)
                        for vk, v in value_keys(row)), +1)
    scanned: list[Any] = [(*k, *m) for k, m in deltas.items()]
    served, truncated = "scores", n > max_scan
    return {"bucket": bucket, "served_from": served, "truncated": truncated,
            "filters": [{"dimension": k, "value": v} for k, v in dims], "series": _series(scanned, bins)}
