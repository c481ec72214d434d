"""Event handling: one batch of events from any topic -> one transaction over every read model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.projector import Projector
from tally_shared.envelope import Envelope, Payload
from tally_shared.topics import DATASETS, QUEUES, SCORE_CONFIGS, SCORES, TRACES, Topic

# Score commands are not validated yet (scoring turns them into ScoreRecorded); dead letters are not events.
CONSUMED_TOPICS: tuple[Topic, ...] = (TRACES, SCORES, SCORE_CONFIGS, QUEUES, DATASETS)

_MODEL_OF = {
    "TraceIngested": "traces", "TraceDeleted": "traces",
    "ScoreRecorded": "scores", "ScoreUpdated": "scores", "ScoreDeleted": "scores",
    "ScoreConfigCreated": "score_configs", "ScoreConfigUpdated": "score_configs",
    "ScoreConfigArchived": "score_configs",
    "DatasetCreated": "datasets", "DatasetRunItemCreated": "traces", "DatasetItemUpserted": "datasets",
    "DatasetItemDeleted": "datasets", "DatasetRunDeleted": "datasets", "DatasetUpdated": "datasets",
}

APPLY_SECONDS = Histogram(
    "tally_projections_batch_apply_seconds", "Time to apply one batch of events (one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_APPLIED = Counter("tally_projections_events_applied_total", "Events applied to the read models",
                         ["model"])
DUPLICATES = Counter("tally_projections_duplicates_total", "Redelivered events that changed nothing")
READ_MODEL_DELAY = Histogram(
    "tally_projections_read_model_delay_seconds",
    "Delay from an event's occurred_at to the commit of its read-model rows", ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


@dataclass
class Deps:
    sessions: async_sessionmaker[AsyncSession]
    projector: Projector


async def apply_batch(batch: Sequence[tuple[Envelope, Payload]], deps: Deps) -> list[Envelope]:
    start = time.perf_counter()
    async with deps.sessions() as session, session.begin():
        applied = await deps.projector.apply(session, batch)
    APPLY_SECONDS.observe(time.perf_counter() - start)
    if len(applied) < len(batch):
        DUPLICATES.inc(len(batch) - len(applied))
    now = datetime.now(UTC)
    per_model: dict[str, int] = {}
    for env in applied:
        model = _MODEL_OF.get(env.type, "queues")
        per_model[model] = per_model.get(model, 0) + 1
        READ_MODEL_DELAY.labels(model).observe(max(0.0, (now - env.occurred_at).total_seconds()))
    for model, n in per_model.items():
        EVENTS_APPLIED.labels(model).inc(n)
    return applied
