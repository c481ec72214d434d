"""The real langfuse 5.0.4 SDK's annotation-queue client, unchanged, against the service served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from langfuse import Langfuse
from langfuse.api import AnnotationQueueObjectType, AnnotationQueueStatus

from queue_router.adapters.scoring_api import FakeScoring
from queue_router.config import Settings
from queue_router.entrypoints.app import create_app
from tally_shared.db import make_engine
from tally_shared.identity.store import IdentityStore
from tally_shared.infra import free_port, wait_for_port
from tally_shared.testing.plugin import create_project_with_key


async def _member(url: str, project: str) -> str:
    engine = make_engine(url, pool_size=1)
    try:
        store = IdentityStore(engine)
        user = await store.create_user(f"sdk-{uuid.uuid4().hex[:8]}@example.com", "a long password")
        await store.add_member(user.id, project, "reviewer")
        return user.id
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def served(qr_db: str, kafka_bootstrap: str) -> Iterator[tuple[str, str, str, str]]:
    port = free_port()
    settings = Settings(database_url=qr_db, kafka_bootstrap_servers=kafka_bootstrap, port=port,
                        run_consumers=False, group_id=f"qr-lf-{uuid.uuid4().hex[:6]}")
    scoring = FakeScoring()
    scoring.configs.add("sc-a")
    server = uvicorn.Server(uvicorn.Config(create_app(settings, scoring=scoring), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port, timeout=30)
    project = f"p-{uuid.uuid4().hex[:10]}"
    public, secret = asyncio.run(create_project_with_key(qr_db, project))
    reviewer = asyncio.run(_member(qr_db, project))
    yield f"http://127.0.0.1:{port}", public, secret, reviewer
    server.should_exit = True
    thread.join(timeout=15)


def test_langfuse_sdk_annotation_queues(served: tuple[str, str, str, str]) -> None:
    host, public, secret, reviewer = served
    lf = Langfuse(public_key=public, secret_key=secret, host=host, tracing_enabled=False)
    api = lf.api.annotation_queues
    q = api.create_queue(name="sdk-queue", description="check answers", score_config_ids=["sc-a"])
    assert q.name == "sdk-queue" and q.score_config_ids == ["sc-a"]
    assert api.get_queue(q.id).description == "check answers"
    listed = api.list_queues(page=1, limit=10)
    assert [x.id for x in listed.data] == [q.id] and listed.meta.total_items == 1

    item = api.create_queue_item(q.id, object_id="trace-1", object_type=AnnotationQueueObjectType.TRACE)
    assert item.status == AnnotationQueueStatus.PENDING and item.object_id == "trace-1"
    done = api.create_queue_item(q.id, object_id="obs-1", object_type=AnnotationQueueObjectType.OBSERVATION,
                                 status=AnnotationQueueStatus.COMPLETED)
    assert done.status == AnnotationQueueStatus.COMPLETED and done.completed_at is not None
    assert api.get_queue_item(q.id, item.id).object_type == AnnotationQueueObjectType.TRACE

    pending = api.list_queue_items(q.id, status=AnnotationQueueStatus.PENDING)
    assert [i.id for i in pending.data] == [item.id]
    updated = api.update_queue_item(q.id, item.id, status=AnnotationQueueStatus.COMPLETED)
    assert updated.status == AnnotationQueueStatus.COMPLETED
    assert api.list_queue_items(q.id, status=AnnotationQueueStatus.COMPLETED).meta.total_items == 2

    deleted = api.delete_queue_item(q.id, done.id)
    assert deleted.success is True
    assert {i.id for i in api.list_queue_items(q.id).data} == {item.id}

    a = api.create_queue_assignment(q.id, user_id=reviewer)
    assert (a.user_id, a.queue_id) == (reviewer, q.id)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()}
    assert httpx.get(f"{host}/api/v1/queues/{q.id}", headers=auth).json()["reviewers"] == [reviewer]
    assert api.delete_queue_assignment(q.id, user_id=reviewer).success is True
