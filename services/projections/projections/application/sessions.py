"""Langfuse-compatible reads over the traces read model: sessions (traces grouped by session id) and the v1
observations list. The SQL is ``adapters/queries/sessions.py``; here: paging and the answers' shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from projections.adapters import views
from projections.domain.errors import NotFound

MAX_SESSION_TRACES = 1000


@dataclass(frozen=True)
class ObservationFilters:
    name: str | None = None
    user_id: str | None = None
    type_: str | None = None
    trace_id: str | None = None
    parent_observation_id: str | None = None
    environment: Sequence[str] = ()
    from_start_time: datetime | None = None
    to_start_time: datetime | None = None
    version: str | None = None
    level: str | None = None


class SessionReads(Protocol):
    async def session_page(self, project_id: str, *, from_ts: datetime | None, to_ts: datetime | None,
                           environment: Sequence[str], offset: int, limit: int
                           ) -> tuple[int, list[dict[str, Any]]]: ...

    async def session_head(self, project_id: str, session_id: str) -> dict[str, Any] | None: ...

    async def session_traces(self, project_id: str, session_id: str, limit: int) -> list[dict[str, Any]]: ...

    async def native_session_page(self, project_id: str, *, offset: int, limit: int
                                  ) -> tuple[int, list[dict[str, Any]]]: ...

    async def observation_page(self, project_id: str, f: ObservationFilters, *, offset: int, limit: int
                               ) -> tuple[int, list[dict[str, Any]]]: ...


def _meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "totalItems": total, "totalPages": (total + limit - 1) // limit}


def _lf_session(project_id: str, r: Any) -> dict[str, Any]:
    return {"id": r["id"], "createdAt": r["created_at"], "projectId": project_id,
            "environment": r["environment"]}


async def public_sessions(store: SessionReads, project_id: str, *, page: int, limit: int,
                          from_ts: datetime | None, to_ts: datetime | None,
                          environment: Sequence[str]) -> dict[str, Any]:
    total, rows = await store.session_page(project_id, from_ts=from_ts, to_ts=to_ts, environment=environment,
                                           offset=(page - 1) * limit, limit=limit)
    return {"data": [_lf_session(project_id, r) for r in rows], "meta": _meta(page, limit, total)}


async def public_session(store: SessionReads, project_id: str, session_id: str) -> dict[str, Any]:
    """SessionWithTraces: the session and its traces (the first 1000, oldest first)."""
    head = await store.session_head(project_id, session_id)
    if head is None:
        raise NotFound(f"session {session_id!r} not found")
    rows = await store.session_traces(project_id, session_id, MAX_SESSION_TRACES)
    return {**_lf_session(project_id, head), "traces": [views.lf_trace(r) for r in rows]}


async def native_sessions(store: SessionReads, project_id: str, *, page: int, limit: int) -> dict[str, Any]:
    """Sessions for the console: each with its trace count, first and last trace time and users."""
    total, rows = await store.native_session_page(project_id, offset=(page - 1) * limit, limit=limit)
    return {"data": rows, "meta": {"page": page, "limit": limit, "total": total}}


async def public_observations_v1(store: SessionReads, project_id: str, *, page: int, limit: int,
                                 filters: ObservationFilters) -> dict[str, Any]:
    """ObservationsViews: observations newest first with page/limit paging and Langfuse's ``meta``."""
    total, rows = await store.observation_page(project_id, filters, offset=(page - 1) * limit, limit=limit)
    return {"data": [views.lf_observation(r) for r in rows], "meta": _meta(page, limit, total)}
