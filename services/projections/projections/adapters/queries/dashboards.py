"""SQL of queue progress and score analytics (the rollup, or the scores themselves)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, literal, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters.tables import Tables
from projections.application.dashboards import ScoreFilter
from projections.domain.rollup import dims_id, truncate


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


class SqlDashboardReads:
    def __init__(self, session: AsyncSession, tables: Tables) -> None:
        self.session, self.t = session, tables

    # -- queue progress

    async def queues(self, project_id: str) -> list[dict[str, Any]]:
        qq = self.t.queues
        return [dict(r) for r in (await self.session.execute(
            select(qq).where(qq.c.project_id == project_id).order_by(qq.c.name, qq.c.id))).mappings()]

    async def item_counts_by_queue(self, project_id: str) -> dict[str, dict[str, int]]:
        qi, qr = self.t.queue_items, self.t.queue_reviews
        return {r["queue_id"]: {k: v for k, v in r.items() if k != "queue_id"} for r in (await self.session.execute(
            select(qi.c.queue_id, *_item_counts(qi, qr)).where(qi.c.project_id == project_id)
            .group_by(qi.c.queue_id))).mappings()}

    async def queue(self, project_id: str, queue_id: str) -> dict[str, Any] | None:
        qq = self.t.queues
        q = (await self.session.execute(select(qq).where(qq.c.project_id == project_id, qq.c.id == queue_id))
             ).mappings().first()
        return dict(q) if q is not None else None

    async def item_counts(self, project_id: str, queue_id: str) -> dict[str, int]:
        qi, qr = self.t.queue_items, self.t.queue_reviews
        return dict((await self.session.execute(select(*_item_counts(qi, qr)).where(
            qi.c.project_id == project_id, qi.c.queue_id == queue_id))).mappings().one())

    async def reviewers(self, project_id: str, queue_id: str) -> list[dict[str, Any]]:
        qr = self.t.queue_reviews
        return [dict(r) for r in (await self.session.execute(
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

    async def reviews_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]:
        qr = self.t.queue_reviews
        return {r[0]: r[1] for r in (await self.session.execute(
            select(func.date_trunc(unit, qr.c.completed_at, "UTC").label("b"), func.count())
            .where(qr.c.project_id == project_id, qr.c.queue_id == queue_id, qr.c.completed_at.isnot(None))
            .group_by(text("b")).order_by(text("b"))))}

    async def items_completed_per(self, project_id: str, queue_id: str, unit: str) -> dict[datetime, int]:
        qi = self.t.queue_items
        return {r[0]: r[1] for r in (await self.session.execute(
            select(func.date_trunc(unit, qi.c.completed_at, "UTC").label("b"), func.count())
            .where(qi.c.project_id == project_id, qi.c.queue_id == queue_id, qi.c.completed_at.isnot(None),
                   qi.c.removed_at.is_(None))
            .group_by(text("b")).order_by(text("b"))))}

    # -- score analytics

    def _rollup_conds(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                      ) -> tuple[list[Any], list[Any]]:
        """The conditions of the requested buckets, and of the day rows the distribution comes from (hourly
        numeric rows carry no value key)."""
        r = self.t.score_rollup
        kind, value = dim
        # the ids lead the key (one range per granularity); the text columns guard against a hash collision
        base = [r.c.project_id == project_id, r.c.dim_kind == kind, r.c.dim_value == value]
        if f.names:
            base.append(r.c.name.in_(list(f.names)))
        if f.config_id is not None:
            base.append(r.c.config_id == f.config_id)
        if f.source is not None:
            base.append(r.c.source == f.source)
        if f.data_type is not None:
            base.append(r.c.data_type == f.data_type)
        if f.to_ts is not None:
            base.append(r.c.bucket < f.to_ts)
        conds = [*base, r.c.granularity == bucket, r.c.dims_id == dims_id(project_id, bucket, kind, value)]
        day_conds = [*base, r.c.granularity == "day", r.c.dims_id == dims_id(project_id, "day", kind, value)]
        if f.from_ts is not None:
            conds.append(r.c.bucket >= f.from_ts)
            day_conds.append(r.c.bucket >= truncate(f.from_ts, "day"))
        return conds, day_conds

    async def rollup_sums(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                          ) -> tuple[list[Any], list[Any]]:
        """Sums (n, n_value, sum, sum_sq) per series and bucket, and per series and value key, each row
        (name, source, config_id, data_type, bucket, value_key, n, n_value, sum, sum_sq)."""
        r = self.t.score_rollup
        conds, day_conds = self._rollup_conds(project_id, dim, f, bucket)
        series_cols = [r.c.name, r.c.source, r.c.config_id, r.c.data_type]
        sums = [func.sum(r.c.n), func.sum(r.c.n_value), func.sum(r.c.sum), func.sum(r.c.sum_sq)]
        if bucket == "day":
            # one scan, two groupings: per bucket and per value key
            rows = (await self.session.execute(
                select(*series_cols, r.c.bucket, r.c.value_key, *sums, func.grouping(r.c.bucket).label("g"))
                .where(*conds)
                .group_by(func.grouping_sets(tuple_(*series_cols, r.c.bucket), tuple_(*series_cols, r.c.value_key)))
            )).all()
            return [row[:10] for row in rows if row[10] == 0], [row[:10] for row in rows if row[10] == 1]
        per_bucket = list((await self.session.execute(
            select(*series_cols, r.c.bucket, literal("").label("vk"), *sums).where(*conds)
            .group_by(*series_cols, r.c.bucket))).all())
        per_value = list((await self.session.execute(
            select(*series_cols, literal(None).label("b"), r.c.value_key, *sums).where(*day_conds)
            .group_by(*series_cols, r.c.value_key))).all())
        return per_bucket, per_value

    async def rollup_categories(self, project_id: str, dim: tuple[str, str], f: ScoreFilter, bucket: str
                                ) -> list[Any]:
        """Counts per series, bucket and category: (name, source, config_id, data_type, bucket, label, n)."""
        r = self.t.score_rollup
        conds, _ = self._rollup_conds(project_id, dim, f, bucket)
        series_cols = [r.c.name, r.c.source, r.c.config_id, r.c.data_type]
        return list((await self.session.execute(
            select(*series_cols, r.c.bucket, r.c.value_key, func.sum(r.c.n))
            .where(*conds, r.c.data_type != "NUMERIC")
            .group_by(*series_cols, r.c.bucket, r.c.value_key))).all())

    async def scores(self, project_id: str, dims: Sequence[tuple[str, str]], f: ScoreFilter, limit: int
                     ) -> Sequence[Mapping[Any, Any]]:
        """The live scores that match, at most ``limit``, with what the rollup keys need."""
        s = self.t.scores
        q2 = select(s.c.name, s.c.source, s.c.config_id, s.c.data_type, s.c.value, s.c.string_value,
                    s.c.string_values, s.c.timestamp).where(s.c.project_id == project_id, ~s.c.deleted)
        for kind, value in dims:
            if kind == "tag":
                q2 = q2.where(s.c.rolled_dims["tag"].op("?")(value))
            else:
                q2 = q2.where(s.c.rolled_dims[kind].astext == value)
        if f.names:
            q2 = q2.where(s.c.name.in_(list(f.names)))
        if f.config_id is not None:
            q2 = q2.where(s.c.config_id == f.config_id)
        if f.source is not None:
            q2 = q2.where(s.c.source == f.source)
        if f.data_type is not None:
            q2 = q2.where(s.c.data_type == f.data_type)
        if f.from_ts is not None:
            q2 = q2.where(s.c.timestamp >= f.from_ts)
        if f.to_ts is not None:
            q2 = q2.where(s.c.timestamp < f.to_ts)
        return (await self.session.execute(q2.limit(limit))).mappings().all()
