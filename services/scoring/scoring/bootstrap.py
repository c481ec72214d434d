"""Wiring, in one place: scoring's container (database, broker, producer, outbox, the fast write pool, caches),
its consumers, and the app serving both HTTP surfaces. One lifespan (tally_shared.service.create_app): what the
container owns is closed there, after the outbox has marked what it published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI

from scoring.adapters.fast_pool import FastPool
from scoring.adapters.tables import outbox as outbox_table
from scoring.application.deps import Deps
from scoring.config import Settings
from scoring.entrypoints import consumers, http_datasets, http_native, http_public
from scoring.entrypoints.timing import ServerTiming
from tally_shared.outbox import Outbox
from tally_shared.service import Job, Runtime, create_app, provide, runtime_parts, tune_gc


@dataclass(kw_only=True)
class ScoringContainer(Runtime):
    settings: Settings
    deps: Deps

    def background(self) -> list[Job]:
        return [*super().background(), self.deps.outbox.run]

    async def close(self) -> None:
        await self.deps.fast.close()
        await super().close()


ScoringDep = Annotated[ScoringContainer, Depends(provide(ScoringContainer))]


def bootstrap(settings: Settings) -> ScoringContainer:
    parts = runtime_parts("scoring", settings)
    outbox = Outbox(
        outbox_table, parts["sessions"], parts["producer"],
        # Requests publish their own events and wait for the acknowledgement; the relay takes only rows their
        # request left behind (crash, broker outage).
        relay_after=settings.outbox_relay_after_seconds, idle_max=settings.outbox_relay_interval_seconds,
    )
    deps = Deps(sessions=parts["sessions"], outbox=outbox, fast=FastPool(settings.database_url,
                                                                          size=settings.db_pool_size))
    container = ScoringContainer(**{**parts, "settings": settings}, deps=deps)
    container.consumer_groups = {settings.group_id: consumers.TOPICS}
    consumers.register(container.broker, deps, settings.group_id)
    return container


async def _freeze_startup_objects() -> None:
    # Full collections, and the pauses they put on single scores, stay short when start-up objects are frozen.
    tune_gc()


def build_app(container: ScoringContainer) -> FastAPI:
    app = create_app(
        container, title="Tally scoring",
        description="Score configs and scores: validated, versioned, recorded as events.",
        routers=[http_public.router, http_native.router, http_datasets.router],
        on_startup=[_freeze_startup_objects],
    )
    app.add_middleware(ServerTiming)
    return app


def create_app_for(settings: Settings | None = None) -> FastAPI:
    return build_app(bootstrap(settings or Settings()))
