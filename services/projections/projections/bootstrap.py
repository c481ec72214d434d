"""Wiring, in one place: projections' container (database, broker, the write side's statements and unit of work,
the queue-router client for blind reviews), its two consumers, and the app. One lifespan
(``tally_shared.service.create_app``): the container closes what it owns after every task has stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncEngine

from projections import SCHEMA
from projections.adapters.blind import BlindPort, HttpBlind
from projections.adapters.statements import Statements
from projections.adapters.tables import Tables, make_tables
from projections.application import dead_letters
from projections.application.handlers import CONSUMED_TOPICS, Deps
from projections.config import Settings
from projections.entrypoints import consumers
from tally_shared.db import make_engine, make_session_factory
from tally_shared.service import Job, Runtime, provide, runtime_parts
from tally_shared.service import tune_gc as shared_tune_gc
from tally_shared.topics import DEAD_LETTER


@dataclass(kw_only=True)
class ProjectionsContainer(Runtime):
    settings: Settings
    tables: Tables
    # the write side: statements for the live schema, a unit of work per batch, on an engine of its own
    write: Deps
    write_engine: AsyncEngine
    blind: BlindPort
    # the client this container opened (None when the caller passed its own ``blind``)
    owned_blind: HttpBlind | None = None
    dead_letter_group: str = field(default="")

    def background(self) -> list[Job]:
        retention = timedelta(days=self.settings.dead_letter_retention_days)
        return [*super().background(), lambda: dead_letters.prune_forever(self.sessions, older_than=retention)]

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.write_engine.dispose()
            if self.owned_blind is not None:
                await self.owned_blind.aclose()


ProjectionsDep = Annotated[ProjectionsContainer, Depends(provide(ProjectionsContainer))]


# Young-generation collections between 10,000 allocations instead of 700 (the older ones in proportion): a batch
# allocates ~40 short-lived containers per event (payload dicts, rows, rollup keys).
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    shared_tune_gc(GC_THRESHOLDS)


def bootstrap(settings: Settings, *, blind: BlindPort | None = None) -> ProjectionsContainer:
    parts = runtime_parts("projections", settings)
    tables = make_tables(SCHEMA)
    owned = None if blind is not None else HttpBlind(settings.queue_router_url)
    # The batches' own pool, without the pre-ping (a round trip and ~1 ms of CPU per transaction): a batch that meets
    # a dropped connection fails, invalidates the pool's older connections and is retried on fresh ones.
    write_engine = make_engine(settings.database_url, pool_size=2, application_name="tally-projections-batches",
                               pre_ping=False)
    container = ProjectionsContainer(
        **{**parts, "settings": settings}, tables=tables,
        write=Deps(make_session_factory(write_engine), Statements(tables)), write_engine=write_engine,
        blind=blind or owned, owned_blind=owned,
        dead_letter_group=settings.dead_letter_group_id or f"{settings.group_id}-dead-letters",
    )
    consumers.register(container.broker, container.write, group_id=settings.group_id,
                       max_records=settings.batch_max_records)
    consumers.register_dead_letters(container.broker, container.sessions, group_id=container.dead_letter_group)
    container.consumer_groups = {settings.group_id: CONSUMED_TOPICS, container.dead_letter_group: (DEAD_LETTER,)}
    tune_gc()
    return container
