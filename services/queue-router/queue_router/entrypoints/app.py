"""The HTTP app: the container's resources, the routers, the routing consumer and the background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI

from queue_router.adapters.scoring_api import ScoringPort
from queue_router.application.reviewing import expire_leases
from queue_router.bootstrap import bootstrap
from queue_router.config import Settings
from queue_router.entrypoints import consumers, errors, http, langfuse_http
from tally_shared.service import create_app as create_service_app
from tally_shared.topics import SCORES, TRACES

log = logging.getLogger(__name__)

DESCRIPTION = """Annotation queues filled live by routing rules over traces and automated scores, and reviewed
under leases. See docs/api.md, "Queues and routing", for the rule filter shape."""


def create_app(settings: Settings | None = None, *, scoring: ScoringPort | None = None) -> FastAPI:
    c = bootstrap(settings, scoring=scoring)
    s = c.settings
    if s.run_consumers:
        consumers.register(c.runtime.broker, group_id=s.group_id, deps=c.router_deps,
                           max_records=s.batch_max_records)
        c.runtime.consumer_groups[s.group_id] = [TRACES, SCORES]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(s.lease_sweep_seconds)
            try:
                await expire_leases(c.runtime.sessions)
            except Exception:  # a failed sweep is retried at the next tick; leases are re-checked on claim anyway
                log.exception("lease sweep failed")

    app = create_service_app(
        c.runtime, title="Tally queue-router", description=DESCRIPTION,
        routers=[http.router, http.routing_router, http.review_router, langfuse_http.router],
        background=([c.relay, sweep] if s.run_outbox_relay else []),
    )
    errors.install(app)
    app.state.container = c
    app.router.lifespan_context = _closing(app.router.lifespan_context, c.close)
    return app


def _closing(lifespan: Any, close: Callable[[], Awaitable[None]]) -> Any:
    """The shared lifespan, then the container's own resources released."""

    @contextlib.asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await close()

    return wrapped
