"""Wiring: runtime, routers, the routing consumer and the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from queue_router.adapters.outbox import relay_forever
from queue_router.adapters.rule_cache import RuleCache
from queue_router.adapters.scoring_api import HttpScoring, ScoringPort
from queue_router.application.queues import Deps
from queue_router.application.reviewing import CLAIM_SERVER_SETTINGS, ReviewDeps, expire_leases
from queue_router.application.routing import RouterDeps
from queue_router.config import Settings
from queue_router.entrypoints import consumers, http, langfuse_http
from tally_shared.db import async_url, connect_args, make_session_factory
from tally_shared.service import build_runtime
from tally_shared.service import create_app as create_service_app
from tally_shared.topics import SCORES, TRACES

log = logging.getLogger(__name__)

DESCRIPTION = """Annotation queues filled live by routing rules over traces and automated scores, and reviewed
under leases. See docs/api.md, "Queues and routing", for the rule filter shape."""


def create_app(settings: Settings | None = None, *, scoring: ScoringPort | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = build_runtime("queue-router", settings)
    http_scoring = HttpScoring(settings.scoring_url)
    scoring = scoring or http_scoring
    cache = RuleCache()
    if settings.run_consumers:
        consumers.register(runtime.broker, group_id=settings.group_id,
                           deps=RouterDeps(runtime.sessions, cache), max_records=settings.batch_max_records)
        runtime.consumer_groups[settings.group_id] = [TRACES, SCORES]

    async def relay() -> None:
        await relay_forever(runtime.sessions, runtime.broker, poll_seconds=settings.outbox_poll_seconds,
                            batch=settings.outbox_batch,
                            retention=timedelta(hours=settings.outbox_retention_hours))

    async def sweep() -> None:
        while True:
            await asyncio.sleep(settings.lease_sweep_seconds)
            try:
                await expire_leases(runtime.sessions)
            except Exception:  # a failed sweep is retried at the next tick; leases are re-checked on claim anyway
                log.exception("lease sweep failed")

    app = create_service_app(
        runtime, title="Tally queue-router", description=DESCRIPTION,
        routers=[http.router, http.routing_router, http.review_router, langfuse_http.router],
        background=([relay, sweep] if settings.run_outbox_relay else []),
    )
    app.state.queue_deps = Deps(runtime.sessions, cache, max_backfill_scan=settings.max_backfill_scan,
                                scoring=scoring, identity=runtime.identity)
    claim_engine = create_async_engine(
        async_url(settings.database_url), pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
        pool_pre_ping=True, connect_args=connect_args(settings.database_url, server_settings={
            "application_name": "tally-queue-router-claims", **CLAIM_SERVER_SETTINGS}))
    app.state.review_deps = ReviewDeps(runtime.sessions, make_session_factory(claim_engine), scoring=scoring)

    app.router.lifespan_context = _with_cleanup(app.router.lifespan_context, claim_engine, http_scoring)
    app.state.rule_cache = cache
    return app


def _with_cleanup(lifespan: Any, engine: AsyncEngine, scoring: HttpScoring) -> Any:
    @contextlib.asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await engine.dispose()
            await scoring.aclose()

    return wrapped
