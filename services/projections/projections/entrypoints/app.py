from __future__ import annotations

from fastapi import FastAPI

from projections.adapters.blind import BlindPort
from projections.bootstrap import bootstrap
from projections.config import Settings
from projections.entrypoints import dead_letters_http, http
from tally_shared.service import create_app as create_service_app


def create_app(settings: Settings | None = None, *, blind: BlindPort | None = None) -> FastAPI:
    container = bootstrap(settings or Settings(), blind=blind)
    app = create_service_app(
        container,
        title="Tally projections",
        description="Read models built from every topic: traces, queue progress, score analytics, experiments, "
                    "agreement, judge calibration, exports; and the dead letters of every consumer.",
        routers=[*http.routers(), dead_letters_http.router],
    )
    # read by the query endpoints (entrypoints/http.py)
    app.state.tables = container.tables
    app.state.blind = container.blind
    return app
