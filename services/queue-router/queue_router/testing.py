"""Test support: the queue-router app on the real broker and database, a producer, and waiting helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from queue_router.adapters.scoring_api import FakeScoring
from queue_router.config import Settings
from queue_router.entrypoints.app import create_app
from tally_shared.envelope import Payload, make_envelope
from tally_shared.events import ScoreData, ScoreRecorded, TraceData, TraceIngested
from tally_shared.messaging import make_broker, publish
from tally_shared.testing.plugin import basic_auth, create_project_with_key
from tally_shared.testing.wait import eventually
from tally_shared.topics import SCORES, TRACES, Topic


@dataclass
class Service:
    app: Any
    client: httpx.AsyncClient
    producer: KafkaBroker
    database_url: str
    settings: Settings
    scoring: FakeScoring

    async def member(self, project: str, email: str, role: str = "reviewer") -> str:
        """A user who is a member of ``project``; returns the user id."""
        identity = self.app.state.identity
        user = await identity.create_user(email, "pw-" + uuid.uuid4().hex)
        await identity.add_member(user.id, project, role)
        return str(user.id)

    async def project(self) -> tuple[str, dict[str, str]]:
        project = f"p-{uuid.uuid4().hex[:10]}"
        public, secret = await create_project_with_key(self.database_url, project)
        return project, basic_auth(public, secret)

    async def send(self, topic: Topic, project: str, key: str, payloads: Sequence[Payload],
                   occurred_at: datetime | None = None) -> None:
        await publish(self.producer, topic, [make_envelope(p, project=project, key=key, occurred_at=occurred_at)
                                             for p in payloads])

    async def trace(self, project: str, trace_id: str, **fields: Any) -> None:
        observations = fields.pop("observations", [])
        await self.send(TRACES, project, trace_id, [TraceIngested(
            trace_id=trace_id, trace=TraceData(id=trace_id, **fields) if fields else None,
            observations=observations)])

    async def score(self, project: str, trace_id: str, name: str, value: float | None = None, *,
                    string_value: str | None = None, source: str = "EVAL", evaluator: str | None = None,
                    data_type: str = "NUMERIC", score_id: str | None = None) -> str:
        sid = score_id or str(uuid.uuid4())
        await self.send(SCORES, project, trace_id, [ScoreRecorded(score=ScoreData(
            id=sid, name=name, data_type=data_type, value=value, string_value=string_value,
            trace_id=trace_id, source=source, evaluator_name=evaluator,
            timestamp=datetime.now(UTC)))])
        return sid

    async def items(self, auth: dict[str, str], queue_id: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(f"/api/v1/queues/{queue_id}/items", headers=auth, params={"limit": 500, **params})
        r.raise_for_status()
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    async def wait_items(self, auth: dict[str, str], queue_id: str, n: int, *, status: str | None = None,
                         timeout: float = 30) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]] | None:
            params: dict[str, Any] = {"limit": 500}
            if status:
                params["status"] = status
            r = await self.client.get(f"/api/v1/queues/{queue_id}/items", headers=auth, params=params)
            r.raise_for_status()
            data: list[dict[str, Any]] = r.json()["data"]
            return data if len(data) >= n else None

        return await eventually(probe, timeout=timeout, what=f"{n} items in queue {queue_id}")


async def start_service(database_url: str, kafka: str, **overrides: Any) -> AsyncIterator[Service]:
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=kafka,
                        group_id=f"queue-router-{uuid.uuid4().hex[:8]}", outbox_poll_seconds=0.05, **overrides)
    scoring = FakeScoring()
    app = create_app(settings, scoring=scoring)
    producer = make_broker(kafka, service="qr-test", registry=CollectorRegistry())
    await producer.connect()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     timeout=30) as client:
            yield Service(app, client, producer, database_url, settings, scoring)
    await producer.stop()




async def summaries_seen(svc: Service, project: str, trace_ids: Sequence[str], timeout: float = 30) -> None:
    """Wait until the router has applied events for every trace (summary and routing commit together)."""
    from sqlalchemy import func, select

    from queue_router.adapters.tables import trace_summaries

    async def probe() -> bool:
        async with svc.app.state.container.sessions() as s:
            n = (await s.execute(select(func.count()).select_from(trace_summaries).where(
                trace_summaries.c.project_id == project, trace_summaries.c.trace_id.in_(list(trace_ids)),
                trace_summaries.c.has_trace.is_(True)))).scalar_one()
        return int(n) == len(set(trace_ids))

    await eventually(probe, timeout=timeout, what=f"router to see {len(trace_ids)} traces")
