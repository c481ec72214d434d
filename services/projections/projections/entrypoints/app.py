from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from projections import SCHEMA
from projections.adapters.blind import BlindPort, HttpBlind
from projections.adapters.statements import Statements
from projections.adapters.tables import make_tables
from projections.application import dead_letters
from projections.application.handlers import CONSUMED_TOPICS, Deps
from projections.config import Settings
from projections.entrypoints import consumers, dead_letters_http, http
from tally_shared.service import build_runtime
from tally_shared.service import create_app as create_service_app
from tally_shared.topics import DEAD_LETTER


def create_app(settings: Settings | None = None, *, blind: BlindPort | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = build_runtime("projections", settings)
    tables = make_tables(SCHEMA)
    deps = Deps(sessions=runtime.sessions, sql=Statements(tables))
    consumers.register(runtime.broker, deps, group_id=settings.group_id, max_records=settings.batch_max_records)
    dead_letter_group = settings.dead_letter_group_id or f"{settings.group_id}-dead-letters"
    consumers.register_dead_letters(runtime.broker, runtime.sessions, group_id=dead_letter_group)
    runtime.consumer_groups = {settings.group_id: CONSUMED_TOPICS, dead_letter_group: (DEAD_LETTER,)}
    app = create_service_app(
        runtime,
        title="Tally projections",
        description="Read models built from every topic: traces, queue progress, score analytics, experiments, "
                    "agreement, judge calibration, exports; and the dead letters of every consumer.",
        routers=[*http.routers(), dead_letters_http.router],
        background=[lambda: dead_letters.prune_forever(
            runtime.sessions, older_than=timedelta(days=settings.dead_letter_retention_days))],
    )
    app.state.tables = tables
    app.state.settings = settings
    http_blind = HttpBlind(settings.queue_router_url)
    app.state.blind = blind or http_blind
    app.router.lifespan_context = _closing(app.router.lifespan_context, http_blind)
    return app


def _closing(lifespan: Any, client: HttpBlind) -> Any:
    @contextlib.asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await client.aclose()

    return wrapped
