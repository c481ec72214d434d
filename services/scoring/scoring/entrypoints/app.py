"""Wiring: one FastAPI app that serves both HTTP surfaces, consumes RecordScore commands and runs the outbox."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from scoring.adapters.fast_pool import FastPool
from scoring.adapters.lag import report_lag
from scoring.adapters.outbox import OutboxPublisher
from scoring.application.deps import Deps
from scoring.config import Settings
from scoring.entrypoints import consumers, http_datasets, http_native, http_public
from scoring.entrypoints.timing import ServerTiming
from tally_shared.service import build_runtime
from tally_shared.service import create_app as create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = build_runtime("scoring", settings)
    publisher = OutboxPublisher(
        settings.kafka_bootstrap_servers, runtime.sessions, relay_after=settings.outbox_relay_after_seconds,
        relay_interval=settings.outbox_relay_interval_seconds, publish_timeout=settings.publish_timeout_seconds,
    )
    fast = FastPool(settings.database_url, size=settings.db_pool_size)
    deps = Deps(sessions=runtime.sessions, outbox=publisher, fast=fast)
    consumers.register(runtime.broker, deps, settings.group_id)

    async def freeze_startup_objects() -> None:
        # Everything built at startup (app, routes, models, clients) lives for the whole process; moving it out of
        # the collector's reach keeps full collections, and the pauses they put on single scores, short.
        gc.collect()
        gc.freeze()

    async def lag() -> None:
        await report_lag(settings.kafka_bootstrap_servers, settings.group_id, consumers.TOPICS)

    app = create_service_app(
        runtime, title="Tally scoring",
        description="Score configs and scores: validated, versioned, recorded as events.",
        routers=[http_public.router, http_native.router, http_datasets.router],
        on_startup=[publisher.start, freeze_startup_objects],
        background=[publisher.run, fast.run, lag],
    )
    app.add_middleware(ServerTiming)
    app.state.deps = deps
    app.state.settings = settings
    return app
