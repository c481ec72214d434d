"""SQL of experiment comparison, reviewer agreement, judge calibration and the labelled-dataset export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.tables import Tables
from projections.adapters.views import json_fragment
from projections.application.evaluation import HUMAN, ExportChunk, Subject

SCORES_PER_STATEMENT = 5000  # trace ids per statement when reading the scores of a run's traces
OBJECTS_PER_STATEMENT = 2000  # object ids per statement when reading automated scores


class SqlEvaluationReads:
    def __init__(self, session: AsyncSession, tables: Tables) -> None:
        self.session, self.t = session, tables

    async def experiment_runs(self, project_id: str, dataset_name: str | None) -> list[dict[str, Any]]:
        tr, ds = self.t.traces, self.t.datasets
        # A run linked by dataset id (the SDK's run_experiment, the datasets API) is named by its dataset's name.
        ds_name = func.coalesce(tr.c.dataset_name, ds.c.name).label("dataset_name")
        q = (select(ds_name, tr.c.dataset_run_name, func.count().label("traces"),
                    func.count(func.distinct(tr.c.dataset_item_id)).label("items"),
                    func.min(func.coalesce(tr.c.timestamp, tr.c.created_at)).label("first_trace_at"),
                    func.max(func.coalesce(tr.c.timestamp, tr.c.created_at)).label("last_trace_at"))
             .select_from(tr.outerjoin(ds, and_(ds.c.project_id == tr.c.project_id, ds.c.id == tr.c.dataset_id)))
             .where(tr.c.project_id == project_id, tr.c.dataset_run_name.isnot(None))
             .group_by(ds_name, tr.c.dataset_run_name).order_by(tr.c.dataset_run_name))
        if dataset_name is not None:
            q = q.where(func.coalesce(tr.c.dataset_name, ds.c.name) == dataset_name)
        return [dict(r) for r in (await self.session.execute(q)).mappings()]

    async def run_score_names(self, project_id: str) -> list[tuple[str, str, str]]:
        """(run name, score name, source) of every live score on a trace of a run."""
        tr, s = self.t.traces, self.t.scores
        return [(r[0], r[1], r[2]) for r in (await self.session.execute(
            select(tr.c.dataset_run_name, s.c.name, s.c.source).distinct()
            .select_from(s.join(tr, and_(tr.c.project_id == s.c.project_id, tr.c.id == s.c.trace_id)))
            .where(s.c.project_id == project_id, tr.c.dataset_run_name.isnot(None), ~s.c.deleted)))]

    async def run_traces(self, project_id: str, runs: Sequence[str]) -> list[dict[str, Any]]:
        tr = self.t.traces
        return [dict(r) for r in (await self.session.execute(
            select(tr.c.id, tr.c.dataset_run_name, tr.c.dataset_item_id)
            .where(tr.c.project_id == project_id, tr.c.dataset_run_name.in_(list(runs))))).mappings()]

    async def trace_scores(self, project_id: str, trace_ids: Sequence[str]) -> list[dict[str, Any]]:
        s = self.t.scores
        out: list[dict[str, Any]] = []
        for i in range(0, len(trace_ids), SCORES_PER_STATEMENT):
            out += [dict(r) for r in (await self.session.execute(
                select(s.c.trace_id, s.c.name, s.c.source, s.c.data_type, s.c.value, s.c.string_value,
                       s.c.author_user_id)
                .where(s.c.project_id == project_id, s.c.trace_id.in_(list(trace_ids[i:i + SCORES_PER_STATEMENT])),
                       ~s.c.deleted))).mappings()]
        return out

    async def config(self, project_id: str, config_id: str) -> dict[str, Any] | None:
        c = self.t.score_configs
        row: dict[str, Any] | None = (await self.session.execute(
            select(c.c.data).where(c.c.project_id == project_id, c.c.id == config_id))).scalar_one_or_none()
        return row

    async def human_scores(self, project_id: str, subject: Subject, queue_id: str | None) -> list[dict[str, Any]]:
        s, qi = self.t.scores, self.t.queue_items
        q = select(s).where(s.c.project_id == project_id, ~s.c.deleted, s.c.source == HUMAN,
                            s.c.author_user_id.isnot(None))
        q = q.where(s.c.config_id == subject.config_id) if subject.config_id is not None else q.where(
            s.c.name == subject.score_name)
        if queue_id is not None:
            in_queue = select(qi.c.object_id).where(qi.c.project_id == project_id, qi.c.queue_id == queue_id,
                                                    qi.c.removed_at.is_(None))
            q = q.where(or_(s.c.queue_id == queue_id,
                            func.coalesce(s.c.observation_id, s.c.trace_id, s.c.session_id).in_(in_queue)))
        return [dict(r) for r in (await self.session.execute(q.order_by(s.c.timestamp, s.c.id))).mappings()]

    async def automated_scores(self, project_id: str, evaluator: str, object_ids: Sequence[str]
                               ) -> list[dict[str, Any]]:
        """The live automated scores named ``evaluator`` on these observations or traces, oldest first within
        each statement's share of the ids."""
        s = self.t.scores
        obj = func.coalesce(s.c.observation_id, s.c.trace_id)
        out: list[dict[str, Any]] = []
        for i in range(0, len(object_ids), OBJECTS_PER_STATEMENT):
            out += [dict(r) for r in (await self.session.execute(
                select(s).where(s.c.project_id == project_id, ~s.c.deleted, s.c.source != HUMAN,
                                s.c.name == evaluator, obj.in_(list(object_ids[i:i + OBJECTS_PER_STATEMENT])))
                .order_by(s.c.timestamp, s.c.id))).mappings()]
        return out


class SqlExportReads:
    """The export reads one chunk per session, so that no transaction stays open while the answer streams."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], tables: Tables) -> None:
        self.sessions, self.t = sessions, tables

    async def labelled_chunk(self, project_id: str, subject: Subject, *, object_type: str | None,
                             min_reviewers: int, after: str | None, limit: int, include_io: bool) -> ExportChunk:
        s, tr, o = self.t.scores, self.t.traces, self.t.observations
        obj = func.coalesce(s.c.observation_id, s.c.trace_id)
        base = [s.c.project_id == project_id, ~s.c.deleted, s.c.source == HUMAN, s.c.author_user_id.isnot(None),
                s.c.config_id == subject.config_id if subject.config_id is not None else
                s.c.name == subject.score_name, obj.isnot(None)]
        if object_type == "OBSERVATION":
            base.append(s.c.observation_id.isnot(None))
        elif object_type == "TRACE":
            base.append(s.c.observation_id.is_(None))
        async with self.sessions() as session:
            q = select(obj.label("obj")).where(*base).group_by(obj).having(
                func.count(func.distinct(s.c.author_user_id)) >= min_reviewers).order_by(obj).limit(limit)
            if after is not None:
                q = q.where(obj > after)
            objs = [r[0] for r in (await session.execute(q))]
            if not objs:
                return ExportChunk([], [], {}, {})
            rows = [dict(r) for r in (await session.execute(
                select(s).where(*base, obj.in_(objs)).order_by(s.c.timestamp, s.c.id))).mappings()]
            trace_ids = sorted({r["trace_id"] for r in rows if r["trace_id"]})
            obs_ids = sorted({r["observation_id"] for r in rows if r["observation_id"]})
            tcols = [tr.c.id, tr.c.name, tr.c.input, tr.c.output, tr.c.metadata, tr.c.tags] if include_io else [
                tr.c.id, tr.c.name, tr.c.tags]
            tmap = {r["id"]: dict(r) for r in (await session.execute(
                select(*tcols).where(tr.c.project_id == project_id, tr.c.id.in_(trace_ids)))).mappings()}
            ocols = [o.c.id, o.c.name, o.c.type, o.c.input, o.c.output, o.c.metadata] if include_io else [
                o.c.id, o.c.name, o.c.type]
            omap = {r["id"]: dict(r) for r in (await session.execute(
                select(*ocols).where(o.c.project_id == project_id, o.c.id.in_(obs_ids)))).mappings()
            } if obs_ids else {}
        if include_io:
            # the stored JSON texts go into the export's lines as they are
            for m in (tmap, omap):
                for r in m.values():
                    r["input"], r["output"] = json_fragment(r["input"]), json_fragment(r["output"])
        return ExportChunk(objs, rows, tmap, omap)

