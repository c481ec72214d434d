"""SQL of the session reads and of the v1 observations list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters.tables import Tables
from projections.application.sessions import ObservationFilters


class SqlSessionReads:
    def __init__(self, session: AsyncSession, tables: Tables) -> None:
        self.session, self.t = session, tables

    def _groups(self, project_id: str, *, from_ts: datetime | None, to_ts: datetime | None,
                environment: Sequence[str]) -> Select[Any]:
        """One row per session: its id, when its first trace happened (Langfuse's ``createdAt``) and its
        environment (the first trace's, as a session belongs to one environment in Langfuse)."""
        tr = self.t.traces
        created = func.min(tr.c.sort_ts).label("created_at")
        env = func.min(func.coalesce(tr.c.environment, "default")).label("environment")
        q = (select(tr.c.session_id.label("id"), created, env)
             .where(tr.c.project_id == project_id, tr.c.session_id.isnot(None))
             .group_by(tr.c.session_id))
        if from_ts is not None:
            q = q.having(func.min(tr.c.sort_ts) >= from_ts)
        if to_ts is not None:
            q = q.having(func.min(tr.c.sort_ts) <= to_ts)
        if environment:
            q = q.having(func.min(func.coalesce(tr.c.environment, "default")).in_(list(environment)))
        return q

    async def session_page(self, project_id: str, *, from_ts: datetime | None, to_ts: datetime | None,
                           environment: Sequence[str], offset: int, limit: int
                           ) -> tuple[int, list[dict[str, Any]]]:
        groups = self._groups(project_id, from_ts=from_ts, to_ts=to_ts, environment=environment).subquery()
        total = (await self.session.execute(select(func.count()).select_from(groups))).scalar_one()
        rows = (await self.session.execute(
            select(groups).order_by(groups.c.created_at.desc(), groups.c.id.desc())
            .limit(limit).offset(offset))).mappings().all()
        return total, [dict(r) for r in rows]

    async def session_head(self, project_id: str, session_id: str) -> dict[str, Any] | None:
        groups = self._groups(project_id, from_ts=None, to_ts=None, environment=()).where(
            self.t.traces.c.session_id == session_id)
        head = (await self.session.execute(groups)).mappings().first()
        return dict(head) if head is not None else None

    async def session_traces(self, project_id: str, session_id: str, limit: int) -> list[dict[str, Any]]:
        tr = self.t.traces
        rows = (await self.session.execute(
            select(tr).where(tr.c.project_id == project_id, tr.c.session_id == session_id)
            .order_by(tr.c.sort_ts.asc(), tr.c.id.asc()).limit(limit))).mappings().all()
        return [dict(r) for r in rows]

    async def native_session_page(self, project_id: str, *, offset: int, limit: int
                                  ) -> tuple[int, list[dict[str, Any]]]:
        tr = self.t.traces
        q = (select(tr.c.session_id.label("id"), func.count().label("trace_count"),
                    func.min(tr.c.sort_ts).label("first_at"), func.max(tr.c.sort_ts).label("last_at"),
                    func.count(tr.c.user_id.distinct()).label("user_count"))
             .where(tr.c.project_id == project_id, tr.c.session_id.isnot(None))
             .group_by(tr.c.session_id)).subquery()
        total = (await self.session.execute(select(func.count()).select_from(q))).scalar_one()
        rows = (await self.session.execute(select(q).order_by(q.c.last_at.desc(), q.c.id.desc())
                                           .limit(limit).offset(offset))).mappings().all()
        return total, [dict(r) for r in rows]

    async def observation_page(self, project_id: str, f: ObservationFilters, *, offset: int, limit: int
                               ) -> tuple[int, list[dict[str, Any]]]:
        o, tr = self.t.observations, self.t.traces
        q = select(o).where(o.c.project_id == project_id)
        if f.user_id is not None:
            q = q.select_from(o.join(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id))).where(
                tr.c.user_id == f.user_id)
        for col, val in ((o.c.name, f.name), (o.c.type, f.type_), (o.c.trace_id, f.trace_id),
                         (o.c.version, f.version), (o.c.level, f.level),
                         (o.c.parent_observation_id, f.parent_observation_id)):
            if val is not None:
                q = q.where(col == val)
        if f.environment:
            q = q.where(func.coalesce(o.c.environment, "default").in_(list(f.environment)))
        start = func.coalesce(o.c.start_time, o.c.created_at)
        if f.from_start_time is not None:
            q = q.where(start >= f.from_start_time)
        if f.to_start_time is not None:
            q = q.where(start < f.to_start_time)
        total = (await self.session.execute(select(func.count()).select_from(q.subquery()))).scalar_one()
        rows = (await self.session.execute(q.order_by(start.desc(), o.c.id.desc()).limit(limit)
                                           .offset(offset))).mappings().all()
        return total, [dict(r) for r in rows]
