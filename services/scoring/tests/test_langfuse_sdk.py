"""The real langfuse 5.x SDK, unchanged, against scoring served by uvicorn on a real port.

In SDK 5, ``create_score`` and ``score_current_trace`` queue scores and send them in batches to
``POST /api/public/scores`` (a JSON list; 202 or 207), which scoring owns. Spans from
``start_as_current_observation`` go to the OTLP endpoint, which ingest serves (not under test here).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langfuse import Langfuse
from langfuse.api import ConfigCategory

from tally_shared.envelope import Envelope

from .conftest import Project, Service, Tap


@pytest.fixture
def langfuse_client(service: Service, project: Project) -> Iterator[Langfuse]:
    lf = Langfuse(public_key=project.public_key, secret_key=project.secret_key, base_url=service.base_url,
                  flush_interval=0.2, environment="test")
    yield lf
    lf.shutdown()


def _named(trace_id: str, name: str) -> Callable[[Envelope], bool]:
    return lambda e: e.key == trace_id and e.payload["score"]["name"] == name


async def test_score_configs_via_sdk(langfuse_client: Langfuse, project: Project, tap: Tap) -> None:
    api = langfuse_client.api
    name = f"helpfulness-{uuid.uuid4().hex[:6]}"
    created = await asyncio.to_thread(
        api.score_configs.create, name=name, data_type="CATEGORICAL",
        categories=[ConfigCategory(label="no", value=0), ConfigCategory(label="yes", value=1)],
        description="Did the answer help?",
    )
    assert created.name == name and created.project_id == project.id and created.is_archived is False
    assert [(c.label, c.value) for c in created.categories or []] == [("no", 0), ("yes", 1)]
    await tap.wait("ScoreConfigCreated", lambda e: e.key == created.id)

    got = await asyncio.to_thread(api.score_configs.get_by_id, created.id)
    assert got.id == created.id and got.data_type == "CATEGORICAL"
    numeric = await asyncio.to_thread(api.score_configs.create, name=f"n-{uuid.uuid4().hex[:6]}",
                                      data_type="NUMERIC", min_value=0, max_value=1)
    listed = await asyncio.to_thread(api.score_configs.get, page=1, limit=1)
    assert listed.meta.total_items == 2 and listed.meta.total_pages == 2 and len(listed.data) == 1

    updated = await asyncio.to_thread(api.score_configs.update, created.id, description="edited",
                                      is_archived=True)
    assert updated.description == "edited" and updated.is_archived is True
    await tap.wait("ScoreConfigArchived", lambda e: e.key == created.id)
    widened = await asyncio.to_thread(api.score_configs.update, numeric.id, max_value=10)
    assert widened.max_value == 10
    assert (widened.model_extra or {}).get("version") == 2


async def test_scores_via_sdk(langfuse_client: Langfuse, service: Service, project: Project, tap: Tap,
                              caplog: pytest.LogCaptureFixture) -> None:
    api = langfuse_client.api
    cfg = await asyncio.to_thread(api.score_configs.create, name=f"correct-{uuid.uuid4().hex[:6]}",
                                  data_type="BOOLEAN")
    trace_id = uuid.uuid4().hex  # 32 hex chars, like an OTel trace id
    langfuse_client.create_score(name="accuracy", value=0.92, trace_id=trace_id, comment="close",
                                 metadata={"judge": "human"})
    langfuse_client.create_score(name=cfg.name, value=True, trace_id=trace_id, config_id=cfg.id)
    langfuse_client.create_score(name="tone", value="friendly", trace_id=trace_id, data_type="CATEGORICAL")
    langfuse_client.create_score(name="session-csat", value=4, session_id=f"sess-{uuid.uuid4().hex[:6]}")

    scored_trace: dict[str, Any] = {}

    def traced() -> None:
        # Spans are exported to the OTLP endpoint, which ingest owns; keep that noise out of this test.
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        with langfuse_client.start_as_current_observation(name="answer-question"):
            scored_trace["id"] = langfuse_client.get_current_trace_id()
            langfuse_client.score_current_trace(name="overall", value=0.5, comment="ok")
        langfuse_client.flush()

    await asyncio.to_thread(traced)
    await tap.wait("ScoreRecorded", lambda e: e.key == scored_trace["id"] and e.payload["score"]["name"] == "overall")
    for name in ("accuracy", cfg.name, "tone"):
        await tap.wait("ScoreRecorded", _named(trace_id, name))

    page = await asyncio.to_thread(api.scores.get_many, trace_id=trace_id, fields="details,subject,annotation")
    by_name = {s.name: s for s in page.data}
    assert set(by_name) == {"accuracy", cfg.name, "tone"}
    acc = by_name["accuracy"]
    assert acc.data_type == "NUMERIC" and acc.value == 0.92 and acc.comment == "close"
    assert acc.metadata == {"judge": "human"} and acc.environment == "test" and acc.project_id == project.id
    assert acc.subject is not None and acc.subject.kind == "trace" and acc.subject.id == trace_id
    boolean = by_name[cfg.name]
    assert boolean.data_type == "BOOLEAN" and boolean.value is True and boolean.config_id == cfg.id
    assert by_name["tone"].value == "friendly"

    first = await asyncio.to_thread(api.scores.get_many, trace_id=trace_id, limit=2)
    assert len(first.data) == 2 and first.meta.cursor
    rest = await asyncio.to_thread(api.scores.get_many, trace_id=trace_id, limit=2, cursor=first.meta.cursor)
    assert len(rest.data) == 1 and rest.meta.cursor is None

    await asyncio.to_thread(api.scores.delete, acc.id)
    await tap.wait("ScoreDeleted", lambda e: e.payload["score_id"] == acc.id)
    after = await asyncio.to_thread(api.scores.get_many, trace_id=trace_id)
    assert {s.name for s in after.data} == {cfg.name, "tone"}

    # A batch with an invalid score: the SDK gets 207 and logs the per-score error (field and rule).
    with caplog.at_level(logging.ERROR, logger="langfuse"):
        langfuse_client.create_score(name=cfg.name, value=0.3, trace_id=trace_id, config_id=cfg.id)
        await asyncio.to_thread(langfuse_client.flush)
    assert any("rejected 1" in r.getMessage() and "value" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
