"""One projections app for the whole test directory (a consumer-group join costs seconds), fed by events the
tests publish themselves on the real broker, writing to the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from projections import MIGRATIONS, SCHEMA
from projections.adapters.blind import FakeBlind
from projections.config import Settings
from projections.entrypoints.app import create_app
from tally_shared.envelope import Envelope, Payload, make_envelope
from tally_shared.messaging import make_broker, publish
from tally_shared.migrations import upgrade_async
from tally_shared.testing.plugin import basic_auth, create_project_with_key
from tally_shared.topics import DATASETS, QUEUES, SCORE_CONFIGS, SCORES, TRACES, Topic

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


TOPIC_OF = {"TraceIngested": TRACES, "TraceDeleted": TRACES, "ScoreRecorded": SCORES, "ScoreUpdated": SCORES,
            "ScoreDeleted": SCORES,
            "ScoreConfigCreated": SCORE_CONFIGS, "ScoreConfigUpdated": SCORE_CONFIGS,
            "ScoreConfigArchived": SCORE_CONFIGS, "DatasetCreated": DATASETS, "DatasetRunItemCreated": DATASETS}


@dataclass
class Harness:
    app: object
    http: httpx.AsyncClient
    broker: KafkaBroker
    database_url: str
    bootstrap: str
    group_id: str
    blind: FakeBlind

    async def project(self) -> tuple[str, dict[str, str]]:
        pid = f"p-{uuid.uuid4().hex[:10]}"
        pk, sk = await create_project_with_key(self.database_url, pid)
        return pid, basic_auth(pk, sk)

    def env(self, payload: Payload, project: str, key: str, occurred_at: datetime | None = None) -> Envelope:
        return make_envelope(payload, project=project, key=key, occurred_at=occurred_at)

    async def send(self, *envelopes: Envelope) -> None:
        by_topic: dict[str, list[Envelope]] = {}
        for e in envelopes:
            topic: Topic = TOPIC_OF.get(e.type, QUEUES)
            by_topic.setdefault(topic.name, []).append(e)
        for name, envs in by_topic.items():
            topic = next(t for t in (TRACES, SCORES, SCORE_CONFIGS, QUEUES, DATASETS) if t.name == name)
            await publish(self.broker, topic, envs)

    async def send_in_order(self, envelopes: Sequence[Envelope]) -> None:
        for e in envelopes:
            await self.send(e)


@pytest.fixture(scope="session")
async def harness(identity_db: str, kafka_bootstrap: str) -> AsyncIterator[Harness]:
    await upgrade_async(MIGRATIONS, identity_db, SCHEMA)
    group = f"projections-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=identity_db, kafka_bootstrap_servers=kafka_bootstrap, group_id=group,
                        batch_max_records=500)
    blind = FakeBlind()
    app = create_app(settings, blind=blind)
    broker = make_broker(kafka_bootstrap, service="projections-tests", registry=CollectorRegistry())
    await broker.start()
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                yield Harness(app, client, broker, identity_db, kafka_bootstrap, group, blind)
    finally:
        await broker.stop()
