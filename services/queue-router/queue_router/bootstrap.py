"""The composition root: queue-router's container (the shared runtime: database, broker, producer; plus the
outbox relay, the rule cache, the claim pool, scoring's client) built once, and the one place where handlers are
given their dependencies. Its lifecycle is the shared one (``tally_shared.service.create_app``): background jobs
from ``background()``, what it owns released by ``close()``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from queue_router.adapters.rule_cache import RuleCache
from queue_router.adapters.scoring_api import HttpScoring, ScoringPort
from queue_router.adapters.tables import outbox as outbox_table
from queue_router.adapters.unit_of_work import UnitOfWorkFactory, unit_of_work
from queue_router.application.deps import Deps
from queue_router.application.reviewing import CLAIM_SERVER_SETTINGS, ReviewDeps, expire_leases
from queue_router.application.routing import RouterDeps
from queue_router.config import Settings
from queue_router.entrypoints import consumers
from tally_shared.db import async_url, connect_args, make_engine, make_session_factory
from tally_shared.outbox import Outbox
from tally_shared.service import Job, Runtime, provide, runtime_parts
from tally_shared.service import tune_gc as shared_tune_gc
from tally_shared.topics import SCORES, TRACES

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RouterContainer(Runtime):
    settings: Settings
    outbox: Outbox
    uow: UnitOfWorkFactory
    rules: RuleCache
    scoring: ScoringPort
    queue_deps: Deps
    review_deps: ReviewDeps
    router_deps: RouterDeps
    claim_engine: AsyncEngine
    consumer_engine: AsyncEngine
    http_scoring: HttpScoring

    def background(self) -> list[Job]:
        jobs = super().background()
        if self.settings.run_outbox_relay:
            jobs += [self.outbox.run, self.sweep_leases]
        return jobs

    async def sweep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_sweep_seconds)
            try:
                await expire_leases(self.uow)
            except Exception:  # a failed sweep is retried at the next tick; leases are re-checked on claim anyway
                log.exception("lease sweep failed")

    async def close(self) -> None:
        await self.claim_engine.dispose()
        await self.consumer_engine.dispose()
        await self.http_scoring.aclose()
        await super().close()


RouterDep = Annotated[RouterContainer, Depends(provide(RouterContainer))]


def tune_gc() -> None:
    # Routing a batch allocates a few hundred thousand objects, nearly all freed by reference counting: young
    # collections every 20,000 allocations instead of 700 took the summary merge from 36 to 25 µs per event on
    # bench/routing.py's workload, for no more memory than a batch's own garbage.
    shared_tune_gc((20_000, 20, 20))


async def freeze_startup_objects() -> None:
    tune_gc()


def bootstrap(settings: Settings | None = None, *, scoring: ScoringPort | None = None) -> RouterContainer:
    settings = settings or Settings()
    parts = runtime_parts("queue-router", settings)
    sessions = parts["sessions"]
    outbox = Outbox(outbox_table, sessions, parts["producer"], batch=settings.outbox_batch,
                    retention=timedelta(hours=settings.outbox_retention_hours),
                    idle_min=settings.outbox_poll_seconds)
    http_scoring = HttpScoring(settings.scoring_url)
    scoring = scoring or http_scoring
    uow = unit_of_work(sessions, outbox)
    rules = RuleCache()
    # The claim runs on its own small pool whose connections plan it by its index (``CLAIM_SERVER_SETTINGS``).
    claim_engine = create_async_engine(
        async_url(settings.database_url), pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
        pool_pre_ping=True, connect_args=connect_args(settings.database_url, server_settings={
            "application_name": "tally-queue-router-claims", **CLAIM_SERVER_SETTINGS}))
    # The router's batches on a pool of their own without the pre-ping (a round trip per transaction): a batch that
    # meets a dropped connection fails, invalidates the pool's older connections and is retried on fresh ones.
    consumer_engine = make_engine(settings.database_url, pool_size=2, application_name="tally-queue-router-batches",
                                  pre_ping=False)
    container = RouterContainer(
        **{**parts, "settings": settings}, outbox=outbox, uow=uow, rules=rules, scoring=scoring,
        queue_deps=Deps(uow, rules, max_backfill_scan=settings.max_backfill_scan, scoring=scoring,
                        identity=parts["identity"]),
        review_deps=ReviewDeps(uow, unit_of_work(make_session_factory(claim_engine), outbox), scoring=scoring),
        router_deps=RouterDeps(unit_of_work(make_session_factory(consumer_engine), outbox), rules),
        claim_engine=claim_engine, consumer_engine=consumer_engine, http_scoring=http_scoring,
    )
    if settings.run_consumers:
        consumers.register(container.broker, group_id=settings.group_id, deps=container.router_deps,
                           max_records=settings.batch_max_records)
        container.consumer_groups = {settings.group_id: [TRACES, SCORES]}
    return container
