"""The composition root: every resource queue-router runs on, built once into a typed container, and the one
place where handlers are given their dependencies. ``close`` releases what the shared runtime does not (the claim
pool, scoring's HTTP client); the app's lifespan calls it on shutdown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from queue_router.adapters.outbox import relay_forever
from queue_router.adapters.rule_cache import RuleCache
from queue_router.adapters.scoring_api import HttpScoring, ScoringPort
from queue_router.adapters.unit_of_work import UnitOfWorkFactory, unit_of_work
from queue_router.application.deps import Deps
from queue_router.application.reviewing import CLAIM_SERVER_SETTINGS, ReviewDeps
from queue_router.application.routing import RouterDeps
from queue_router.config import Settings
from tally_shared.db import async_url, connect_args, make_session_factory
from tally_shared.service import Runtime, build_runtime


@dataclass
class Container:
    settings: Settings
    runtime: Runtime
    uow: UnitOfWorkFactory
    rules: RuleCache
    scoring: ScoringPort
    queue_deps: Deps
    review_deps: ReviewDeps
    router_deps: RouterDeps
    claim_engine: AsyncEngine
    http_scoring: HttpScoring

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.sessions

    async def relay(self) -> None:
        s = self.settings
        await relay_forever(self.runtime.sessions, self.runtime.broker, poll_seconds=s.outbox_poll_seconds,
                            batch=s.outbox_batch, retention=timedelta(hours=s.outbox_retention_hours))

    async def close(self) -> None:
        await self.claim_engine.dispose()
        await self.http_scoring.aclose()


def bootstrap(settings: Settings | None = None, *, scoring: ScoringPort | None = None) -> Container:
    settings = settings or Settings()
    runtime = build_runtime("queue-router", settings)
    http_scoring = HttpScoring(settings.scoring_url)
    scoring = scoring or http_scoring
    uow = unit_of_work(runtime.sessions)
    rules = RuleCache()
    # The claim runs on its own small pool whose connections plan it by its index (``CLAIM_SERVER_SETTINGS``).
    claim_engine = create_async_engine(
        async_url(settings.database_url), pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
        pool_pre_ping=True, connect_args=connect_args(settings.database_url, server_settings={
            "application_name": "tally-queue-router-claims", **CLAIM_SERVER_SETTINGS}))
    return Container(
        settings=settings, runtime=runtime, uow=uow, rules=rules, scoring=scoring,
        queue_deps=Deps(uow, rules, max_backfill_scan=settings.max_backfill_scan, scoring=scoring,
                        identity=runtime.identity),
        review_deps=ReviewDeps(runtime.sessions, make_session_factory(claim_engine), scoring=scoring),
        router_deps=RouterDeps(uow, rules),
        claim_engine=claim_engine, http_scoring=http_scoring,
    )
