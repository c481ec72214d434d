"""Compiled rules per project, kept in memory and checked against ``rule_versions`` once per batch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from queue_router.adapters.tables import queues, rule_versions, rules
from queue_router.domain.filters import RuleSet, compile_rules, parse_filter


@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str
    queue_id: str
    target: str
    sample_rate: float
    daily_cap: int | None
    reviewers_per_item: int


@dataclass
class ProjectRules:
    version: int
    rules: list[RuleInfo]
    ruleset: RuleSet
    uses_scores: bool


EMPTY = ProjectRules(version=-1, rules=[], ruleset=compile_rules([]), uses_scores=False)


async def bump_version(session: AsyncSession, project_id: str) -> None:
    """Call in the transaction that changes a project's rules or queues."""
    await session.execute(
        pg_insert(rule_versions).values(project_id=project_id, version=1)
        .on_conflict_do_update(index_elements=["project_id"], set_={"version": rule_versions.c.version + 1})
    )


class RuleCache:
    def __init__(self) -> None:
        self._cache: dict[str, ProjectRules] = {}
        self.compilations = 0

    def invalidate(self, project_id: str) -> None:
        self._cache.pop(project_id, None)

    def cached(self, project_id: str) -> ProjectRules | None:
        """The project's rules as last resolved, unchecked (``resolve`` says whether they are still current)."""
        return self._cache.get(project_id)

    async def get_many(self, session: AsyncSession, project_ids: Iterable[str]) -> dict[str, ProjectRules]:
        wanted = sorted(set(project_ids))
        if not wanted:
            return {}
        versions = dict((await session.execute(
            select(rule_versions.c.project_id, rule_versions.c.version)
            .where(rule_versions.c.project_id.in_(wanted))
        )).all())
        return await self.resolve(session, wanted, versions)

    async def resolve(self, session: AsyncSession, project_ids: Iterable[str], versions: dict[str, int]
                      ) -> dict[str, ProjectRules]:
        """The projects' rules at ``versions`` (read by the caller; a project without a row is at 0), compiled
        again only where the version moved."""
        out: dict[str, ProjectRules] = {}
        for p in sorted(set(project_ids)):
            v = versions.get(p, 0)
            hit = self._cache.get(p)
            if hit is None or hit.version != v:
                hit = await self._load(session, p, v)
                self._cache[p] = hit
            out[p] = hit
        return out

    async def _load(self, session: AsyncSession, project_id: str, version: int) -> ProjectRules:
        rows = (await session.execute(
            select(rules.c.id, rules.c.name, rules.c.queue_id, rules.c.target, rules.c.sample_rate,
                   rules.c.daily_cap, rules.c.filter, queues.c.reviewers_per_item)
            .join(queues, queues.c.id == rules.c.queue_id)
            .where(rules.c.project_id == project_id, rules.c.active.is_(True), rules.c.is_deleted.is_(False),
                   queues.c.is_archived.is_(False))
            .order_by(rules.c.created_at, rules.c.id)
        )).all()
        infos = [RuleInfo(r.id, r.name, r.queue_id, r.target, r.sample_rate, r.daily_cap, r.reviewers_per_item)
                 for r in rows]
        filters = [parse_filter(r.filter) for r in rows]
        self.compilations += 1
        uses_scores = any(c.field == "score" for f in filters for g in f.groups for c in g.conditions)
        return ProjectRules(version, infos, compile_rules(filters), uses_scores)

