from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from projections import SCHEMA
from projections.adapters.blind import BlindPort, HttpBlind
from projections.adapters.projector import Projector
from projections.adapters.tables import make_tables
from projections.application.handlers import CONSUMED_TOPICS, Deps
from projections.config import Settings
from projections.entrypoints import consumers, http
from tally_shared.service import build_runtime
from tally_shared.service import create_app as create_service_app


def create_app(settings: Settings | None = None, *, blind: BlindPort | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = build_runtime("projections", settings)
    tables = make_tables(SCHEMA)
    deps = Deps(sessions=runtime.sessions, projector=Projector(tables))
    consumers.register(runtime.broker, deps, group_id=settings.group_id, max_records=settings.batch_max_records)
    runtime.consumer_groups = {settings.group_id: CONSUMED_TOPICS}
    app = create_service_app(
        runtime,
        title="Tally projections",
        description="Read models built from every topic: traces, queue progress, score analytics, experiments, "
                    "agreement, judge calibration, exports.",
        routers=http.routers(),
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
