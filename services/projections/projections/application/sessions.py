"""Langfuse-compatible reads over the traces read model: sessions (traces grouped by session id) and the v1
observations list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from projections.adapters import views
from projections.adapters.tables import Tables
from projections.domain.errors import NotFound


def _meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "totalItems": total, "totalPages": (total + limit - 1) // limit}


def _session_groups(t: Tables, project_id: str, *, from_ts: datetime | None, to_ts: datetime | None,
                    environment: Sequence[str]) -> Select[Any]:
    """One row per session: its id, when its first trace happened (Langfuse's ``createdAt``) and its
    environment (the first trace's, as a session belongs to one environment in Langfuse)."""
    tr = t.traces
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


def _lf_session(project_id: str, r: Any) -> dict[str, Any]:
    return {"id": r["id"], "createdAt": r["created_at"], "projectId": project_id,
            "environment": r["environment"]}


async def public_sessions(session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int,
                          from_ts: datetime | None, to_ts: datetime | None,
                          environment: Sequence[str]) -> dict[str, Any]:
    groups = _session_groups(t, project_id, from_ts=from_ts, to_ts=to_ts, environment=environment).subquery()
    total = (await session.execute(select(func.count()).select_from(groups))).scalar_one()
    rows = (await session.execute(
        select(groups).order_by(groups.c.created_at.desc(), groups.c.id.desc())
        .limit(limit).offset((page - 1) * limit))).mappings().all()
    return {"data": [_lf_session(project_id, r) for r in rows], "meta": _meta(page, limit, total)}


MAX_SESSION_TRACES = 1000


async def public_session(session: AsyncSession, t: Tables, project_id: str, session_id: str) -> dict[str, Any]:
    """SessionWithTraces: the session and its traces (the first 1000, oldest first)."""
    tr = t.traces
    groups = _session_groups(t, project_id, from_ts=None, to_ts=None, environment=()).where(
        tr.c.session_id == session_id)
    head = (await session.execute(groups)).mappings().first()
    if head is None:
        raise NotFound(f"session {session_id!r} not found")
    rows = (await session.execute(
        select(tr).where(tr.c.project_id == project_id, tr.c.session_id == session_id)
        .order_by(tr.c.sort_ts.asc(), tr.c.id.asc()).limit(MAX_SESSION_TRACES))).mappings().all()
    return {**_lf_session(project_id, head), "traces": [views.lf_trace(r) for r in rows]}


async def native_sessions(session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int
                          ) -> dict[str, Any]:
    """Sessions for the console: each with its trace count, first and last trace time and users."""
    tr = t.traces
    q = (select(tr.c.session_id.label("id"), func.count().label("trace_count"),
                func.min(tr.c.sort_ts).label("first_at"), func.max(tr.c.sort_ts).label("last_at"),
                func.count(tr.c.user_id.distinct()).label("user_count"))
         .where(tr.c.project_id == project_id, tr.c.session_id.isnot(None))
         .group_by(tr.c.session_id)).subquery()
    total = (await session.execute(select(func.count()).select_from(q))).scalar_one()
    rows = (await session.execute(select(q).order_by(q.c.last_at.desc(), q.c.id.desc())
                                  .limit(limit).offset((page - 1) * limit))).mappings().all()
    return {"data": [dict(r) for r in rows], "meta": {"page": page, "limit": limit, "total": total}}


async def public_observations_v1(
    session: AsyncSession, t: Tables, project_id: str, *, page: int, limit: int, name: str | None = None,
    user_id: str | None = None, type_: str | None = None, trace_id: str | None = None,
    parent_observation_id: str | None = None, environment: Sequence[str] = (),
    from_start_time: datetime | None = None, to_start_time: datetime | None = None, version: str | None = None,
    level: str | None = None,
) -> dict[str, Any]:
    """ObservationsViews: observations newest first with page/limit paging and Langfuse's ``meta``."""
    o, tr = t.observations, t.traces
    q = select(o).where(o.c.project_id == project_id)
    if user_id is not None:
        q = q.select_from(o.join(tr, and_(tr.c.project_id == o.c.project_id, tr.c.id == o.c.trace_id))).where(
            tr.c.user_id == user_id)
    for col, val in ((o.c.name, name), (o.c.type, type_), (o.c.trace_id, trace_id), (o.c.version, version),
                     (o.c.level, level), (o.c.parent_observation_id, parent_observation_id)):
        if val is not None:
            q = q.where(col == val)
    if environment:
        q = q.where(func.coalesce(o.c.environment, "default").in_(list(environment)))
    start = func.coalesce(o.c.start_time, o.c.created_at)
    if from_start_time is not None:
        q = q.where(start >= from_start_time)
    if to_start_time is not None:
        q = q.where(start < to_start_time)
    total = (await session.execute(select(func.count()).select_from(q.subquery()))).scalar_one()
    rows = (await session.execute(q.order_by(start.desc(), o.c.id.desc()).limit(limit)
                                  .offset((page - 1) * limit))).mappings().all()
    return {"data": [views.lf_observation(r) for r in rows], "meta": _meta(page, limit, total)}
