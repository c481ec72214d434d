"""SQL of the trace and observation reads: the Langfuse-compatible lists and the native trace view."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters.tables import Tables
from projections.application.traces import (
    Condition,
    ObservationFilters,
    Order,
    ScoreMatch,
    TraceFilters,
)

_OPS: dict[str, Any] = {
    "=": lambda c, v: c == v, ">": lambda c, v: c > v, "<": lambda c, v: c < v,
    ">=": lambda c, v: c >= v, "<=": lambda c, v: c <= v, "<>": lambda c, v: c != v,
    "contains": lambda c, v: c.contains(v, autoescape=True),
    "does not contain": lambda c, v: ~c.contains(v, autoescape=True),
    "starts with": lambda c, v: c.startswith(v, autoescape=True),
    "ends with": lambda c, v: c.endswith(v, autoescape=True),
    "any of": lambda c, v: c.in_(list(v or [])), "none of": lambda c, v: ~c.in_(list(v or [])),
    "is null": lambda c, v: c.is_(None), "is not null": lambda c, v: c.isnot(None)}


class SqlTraceReads:
    def __init__(self, session: AsyncSession, tables: Tables) -> None:
        self.session, self.t = session, tables

    async def observations_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                              ) -> dict[str, list[dict[str, Any]]]:
        if not trace_ids:
            return {}
        o = self.t.observations
        cols = [o.c[c] for c in columns] if columns else [o]
        rows = await self.session.execute(
            select(*cols).where(o.c.project_id == project_id, o.c.trace_id.in_(list(trace_ids))))
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows.mappings():
            out[r["trace_id"]].append(dict(r))
        return out

    async def scores_of(self, project_id: str, trace_ids: Sequence[str], columns: Sequence[str] | None = None
                        ) -> dict[str, list[dict[str, Any]]]:
        if not trace_ids:
            return {}
        s = self.t.scores
        cols = [s.c[c] for c in columns] if columns else [s]
        rows = await self.session.execute(
            select(*cols).where(s.c.project_id == project_id, s.c.trace_id.in_(list(trace_ids)), ~s.c.deleted)
            .order_by(s.c.timestamp, s.c.id))
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows.mappings():
            out[r["trace_id"]].append(dict(r))
        return out

    async def trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        tr = self.t.traces
        row = (await self.session.execute(
            select(tr).where(tr.c.project_id == project_id, tr.c.id == trace_id))).mappings().first()
        return dict(row) if row is not None else None

    def _filters(self, q: Select[Any], project_id: str, f: TraceFilters) -> Select[Any]:
        tr = self.t.traces
        ts = tr.c.sort_ts
        q = q.where(tr.c.project_id == project_id)
        if f.name is not None:
            q = q.where(tr.c.name == f.name)
        if f.user_id is not None:
            q = q.where(tr.c.user_id == f.user_id)
        if f.session_id is not None:
            q = q.where(tr.c.session_id == f.session_id)
        if f.from_ts is not None:
            q = q.where(ts >= f.from_ts)
        if f.to_ts is not None:
            q = q.where(ts < f.to_ts)
        if f.tags:
            q = q.where(tr.c.tags.op("@>")(cast(literal(orjson.dumps(list(f.tags)).decode()), JSONB)))
        if f.version is not None:
            q = q.where(tr.c.version == f.version)
        if f.release is not None:
            q = q.where(tr.c.release == f.release)
        if f.environment:
            q = q.where(func.coalesce(tr.c.environment, "default").in_(list(f.environment)))
        return q

    def _order(self, order: Order | None) -> list[Any]:
        tr = self.t.traces
        if order is None:
            return [tr.c.sort_ts.desc(), tr.c.id.desc()]
        col = tr.c.sort_ts if order.field == "timestamp" else tr.c[order.field]
        if order.ascending:
            return [col.asc(), tr.c.id.asc()]
        return [col.desc(), tr.c.id.desc()]

    async def trace_page(self, project_id: str, f: TraceFilters, order: Order | None, *, offset: int, limit: int
                         ) -> tuple[int, list[dict[str, Any]]]:
        tr = self.t.traces
        total = (await self.session.execute(
            self._filters(select(func.count()).select_from(tr), project_id, f))).scalar_one()
        rows = [dict(r) for r in (await self.session.execute(
            self._filters(select(tr), project_id, f).order_by(*self._order(order)).limit(limit).offset(offset)
        )).mappings()]
        return total, rows

    def _conditions(self, q: Select[Any], conditions: Sequence[Condition]) -> Select[Any]:
        o, tr = self.t.observations, self.t.traces
        for c in conditions:
            if c.kind == "root":
                q = q.where(o.c.parent_observation_id.is_(None) if c.value
                            else o.c.parent_observation_id.isnot(None))
                continue
            if c.kind == "tags":
                col: Any = tr.c.tags
                vals = list(c.value or [])
                if c.operator == "any of":
                    q = q.where(or_(*[col.op("?")(v) for v in vals]) if vals else literal(False))
                elif c.operator == "all of":
                    q = q.where(col.op("@>")(cast(literal(orjson.dumps(vals).decode()), JSONB)))
                else:  # none of
                    q = q.where(~or_(*[func.coalesce(col, cast(literal("[]"), JSONB)).op("?")(v) for v in vals]))
                continue
            if c.kind == "metadata":
                col = o.c.metadata[c.field].astext
            elif c.kind == "trace":
                col = tr.c[c.field]
            else:
                col = o.c[c.field]
            q = q.where(_OPS[c.operator](col, c.value))
        return q

    async def observations_v2(self, project_id: str, f: ObservationFilters | Sequence[Condition],
                              after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
        """Observations newest first with their trace's fields, filtered either by the simple parameters or by
        the ``filter`` conditions; ``after`` is the (start, id) the page starts below."""
        o, tr = self.t.observations, self.t.traces
        start = func.coalesce(o.c.start_time, o.c.created_at).label("sort_start")
        q = (
            select(o, start, tr.c.name.label("trace_name"), tr.c.user_id.label("trace_user_id"),
                   tr.c.session_id.label("trace_session_id"), tr.c.tags.label("trace_tags"),
                   tr.c.release.label("trace_release"), tr.c.public.label("trace_public"))
            .select_from(o.outerjoin(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id)))
            .where(o.c.project_id == project_id)
        )
        if not isinstance(f, ObservationFilters):
            q = self._conditions(q, f)
        else:
            simple = {o.c.name: f.name, tr.c.user_id: f.user_id, tr.c.session_id: f.session_id, o.c.type: f.type_,
                      o.c.trace_id: f.trace_id, o.c.level: f.level, o.c.version: f.version}
            for col, val in simple.items():
                if val is not None:
                    q = q.where(col == val)
            if f.parent_observation_id is not None:
                q = q.where(o.c.parent_observation_id == f.parent_observation_id if f.parent_observation_id
                            else o.c.parent_observation_id.is_(None))
            if f.is_root_observation is not None:
                q = q.where(o.c.parent_observation_id.is_(None) if f.is_root_observation
                            else o.c.parent_observation_id.isnot(None))
            if f.environment:
                q = q.where(func.coalesce(o.c.environment, "default").in_(list(f.environment)))
            if f.from_start_time is not None:
                q = q.where(o.c.start_time >= f.from_start_time)
            if f.to_start_time is not None:
                q = q.where(o.c.start_time < f.to_start_time)
        if after is not None:
            cs, ci = after
            q = q.where(tuple_(func.coalesce(o.c.start_time, o.c.created_at), o.c.id)
                        < tuple_(literal(cs), literal(ci)))
        q = q.order_by(func.coalesce(o.c.start_time, o.c.created_at).desc(), o.c.id.desc()).limit(limit)
        return [dict(r) for r in (await self.session.execute(q)).mappings()]

    async def observation(self, project_id: str, oid: str) -> dict[str, Any] | None:
        o = self.t.observations
        row = (await self.session.execute(select(o).where(o.c.project_id == project_id, o.c.id == oid))
               ).mappings().first()
        return dict(row) if row is not None else None

    # -- native trace view

    async def config_names(self, project_id: str, config_ids: Sequence[str]) -> dict[str, str]:
        c = self.t.score_configs
        return {r[0]: r[1] for r in (await self.session.execute(
            select(c.c.id, c.c.name).where(c.c.project_id == project_id, c.c.id.in_(list(config_ids)))))}

    async def queue_items_of(self, project_id: str, trace_id: str) -> list[dict[str, Any]]:
        """The queue items about the trace (or whose object is it), with their queue's name."""
        qi, qq = self.t.queue_items, self.t.queues
        return [dict(r) for r in (await self.session.execute(
            select(qi, qq.c.name.label("queue_name"))
            .select_from(qi.outerjoin(qq, and_(qq.c.project_id == qi.c.project_id, qq.c.id == qi.c.queue_id)))
            .where(qi.c.project_id == project_id, or_(qi.c.trace_id == trace_id, qi.c.object_id == trace_id))
            .order_by(qi.c.queue_id, qi.c.item_id)
        )).mappings()]

    async def reviews_of(self, project_id: str, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        qr = self.t.queue_reviews
        return [dict(r) for r in (await self.session.execute(
            select(qr).where(qr.c.project_id == project_id, tuple_(qr.c.queue_id, qr.c.item_id).in_(list(items)))
            .order_by(qr.c.reviewer)
        )).mappings()]

    async def native_trace_ids(self, project_id: str, f: TraceFilters, *, level: str | None,
                               score: ScoreMatch | None, order: Order | None, offset: int, limit: int
                               ) -> tuple[int, list[str]]:
        """How many traces match, and the ids of one page of them in order."""
        tr, o, s = self.t.traces, self.t.observations, self.t.scores
        q = self._filters(select(tr.c.id), project_id, f)
        if level is not None:
            q = q.where(select(o.c.id).where(o.c.project_id == tr.c.project_id, o.c.trace_id == tr.c.id,
                                             o.c.level == level).exists())
        if score is not None:
            sq = select(s.c.id).where(s.c.project_id == tr.c.project_id, s.c.trace_id == tr.c.id, ~s.c.deleted)
            if score.name is not None:
                sq = sq.where(s.c.name == score.name)
            if score.min is not None:
                sq = sq.where(s.c.value >= score.min)
            if score.max is not None:
                sq = sq.where(s.c.value <= score.max)
            if score.label is not None:
                sq = sq.where(s.c.string_value == score.label)
            if score.source is not None:
                sq = sq.where(s.c.source == score.source)
            q = q.where(sq.exists())
        total = (await self.session.execute(select(func.count()).select_from(q.subquery()))).scalar_one()
        ids = [r[0] for r in (await self.session.execute(
            q.add_columns(tr.c.sort_ts, tr.c.name, tr.c.user_id, tr.c.release, tr.c.version, tr.c.public,
                          tr.c.session_id).order_by(*self._order(order))
            .limit(limit).offset(offset)))]
        return total, ids

    async def traces_by_id(self, project_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        tr = self.t.traces
        return {r["id"]: dict(r) for r in (await self.session.execute(
            select(tr).where(tr.c.project_id == project_id, tr.c.id.in_(list(ids))))).mappings()}
