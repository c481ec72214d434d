"""The HTTP app over the container (``queue_router.bootstrap``): routers, domain errors as HTTP answers."""

from __future__ import annotations

from fastapi import FastAPI

from queue_router.adapters.scoring_api import ScoringPort
from queue_router.bootstrap import bootstrap, freeze_startup_objects
from queue_router.config import Settings
from queue_router.entrypoints import errors, http, langfuse_http
from tally_shared.service import create_app as create_service_app

DESCRIPTION = """Annotation queues filled live by routing rules over traces and automated scores, and reviewed
under leases. See docs/api.md, "Queues and routing", for the rule filter shape."""


def create_app(settings: Settings | None = None, *, scoring: ScoringPort | None = None) -> FastAPI:
    app = create_service_app(
        bootstrap(settings, scoring=scoring), title="Tally queue-router", description=DESCRIPTION,
        routers=[http.router, http.routing_router, http.review_router, langfuse_http.router],
        on_startup=[freeze_startup_objects],
    )
    errors.install(app)
    return app
