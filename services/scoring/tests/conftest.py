"""One scoring app for the whole test session (a consumer-group join on Tansu costs seconds), served both in-process
(ASGI transport) and on a real port (for the synchronous langfuse SDK), plus a Kafka tap that records every event
scoring publishes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from scoring import MIGRATIONS, SCHEMA
from scoring.config import Settings
from scoring.entrypoints.app import create_app
from tally_shared.envelope import Envelope
from tally_shared.infra import free_port
from tally_shared.migrations import upgrade
from tally_shared.testing.plugin import basic_auth, create_project_with_key
from tally_shared.testing.wait import eventually
from tally_shared.topics import COMMENTS, DATASETS, DEAD_LETTER, SCORE_CONFIGS, SCORES


@dataclass
class Tap:
    """Everything published on the scoring topics (and the dead-letter topic) since the session started."""

    events: list[tuple[str, Envelope]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    def of(self, event_type: str, pred: Callable[[Envelope], bool] = lambda e: True) -> list[Envelope]:
        return [e for _, e in self.events if e.type == event_type and pred(e)]

    async def wait(self, event_type: str, pred: Callable[[Envelope], bool], what: str = "",
                   timeout: float = 20) -> Envelope:
        async def probe() -> Envelope | None:
            found = self.of(event_type, pred)
            return found[0] if found else None

        return await eventually(probe, timeout=timeout, interval=0.05, what=what or event_type)


@pytest_asyncio.fixture(scope="session")
async def tap(kafka_bootstrap: str) -> AsyncIterator[Tap]:
    import orjson

    t = Tap()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    # Manual assignment: no group join, so the tap is ready at once.
    parts = [TopicPartition(topic.name, p) for topic in (SCORES, SCORE_CONFIGS, DATASETS, COMMENTS, DEAD_LETTER)
             for p in range(topic.partitions)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)

    async def pump() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for r in records:
                    if tp.topic == DEAD_LETTER.name:
                        t.dead.append(orjson.loads(r.value))
                    else:
                        env = Envelope.model_validate_json(r.value)
                        assert r.key is not None and r.key.decode() == env.key
                        t.events.append((tp.topic, env))

    task = asyncio.create_task(pump())
    # seek_to_end is lazy; make sure positions are fixed before tests publish anything.
    for tp in parts:
        await consumer.position(tp)
    yield t
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


@dataclass
class Service:
    app: FastAPI
    base_url: str
    database_url: str
    kafka: str
    settings: Settings

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t",
                                 headers=headers or {})


@pytest_asyncio.fixture(scope="session")
async def service(identity_db: str, kafka_bootstrap: str, tap: Tap) -> AsyncIterator[Service]:
    await asyncio.to_thread(upgrade, MIGRATIONS, identity_db, SCHEMA)
    settings = Settings(database_url=identity_db, kafka_bootstrap_servers=kafka_bootstrap,
                        group_id=f"scoring-{uuid.uuid4().hex[:8]}", outbox_relay_after_seconds=5.0,
                        outbox_relay_interval_seconds=0.5)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    async with app.router.lifespan_context(app):
        task = asyncio.create_task(server.serve())

        async def started() -> bool:
            return bool(server.started)

        await eventually(started, timeout=15, interval=0.02, what="uvicorn serving")
        yield Service(app, f"http://127.0.0.1:{port}", identity_db, kafka_bootstrap, settings)
        server.should_exit = True
        await task


@dataclass
class Project:
    id: str
    public_key: str
    secret_key: str

    @property
    def auth(self) -> dict[str, str]:
        return basic_auth(self.public_key, self.secret_key)


@pytest_asyncio.fixture
async def project(service: Service) -> Project:
    pid = f"p-{uuid.uuid4().hex[:10]}"
    pk, sk = await create_project_with_key(service.database_url, pid)
    return Project(pid, pk, sk)


@pytest_asyncio.fixture
async def client(service: Service, project: Project) -> AsyncIterator[httpx.AsyncClient]:
    async with service.client(project.auth) as c:
        yield c


@pytest.fixture
def new_project(service: Service) -> Callable[[], Any]:
    async def make() -> Project:
        pid = f"p-{uuid.uuid4().hex[:10]}"
        pk, sk = await create_project_with_key(service.database_url, pid)
        return Project(pid, pk, sk)

    return make
