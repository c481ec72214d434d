"""TraceDeleted (on tally.traces): the trace's scores are deleted (ScoreDeleted each) and later scores for it
are refused; the scores of other traces and other projects stay."""

from __future__ import annotations

import uuid

import httpx

from tally_shared.envelope import make_envelope
from tally_shared.events import TraceData, TraceDeleted, TraceIngested
from tally_shared.messaging import publish
from tally_shared.topics import TRACES

from .conftest import Project, Service, Tap


async def test_deleting_a_trace_deletes_its_scores(service: Service, tap: Tap, project: Project,
                                                   client: httpx.AsyncClient) -> None:
    runtime = service.app.state.runtime
    doomed, kept = uuid.uuid4().hex, uuid.uuid4().hex
    for trace, name in ((doomed, "a"), (doomed, "b"), (kept, "a")):
        r = await client.post("/api/public/scores", json={"traceId": trace, "name": name, "value": 1})
        assert r.status_code == 200, r.text
    await publish(runtime.broker, TRACES, [
        # an ingested trace event on the same topic is skipped without being decoded
        make_envelope(TraceIngested(trace_id=doomed), project=project.id, key=doomed),
        make_envelope(TraceDeleted(trace_id=doomed), project=project.id, key=doomed),
    ])
    await tap.wait("ScoreDeleted", lambda e: e.key == doomed and e.project == project.id)

    async def remaining() -> list[str]:
        r = await client.get("/api/public/v3/scores", params={"limit": 50, "fields": "subject"})
        assert r.status_code == 200, r.text
        return sorted(s["subject"]["id"] for s in r.json()["data"])

    assert await remaining() == [kept]
    deleted = tap.of("ScoreDeleted", lambda e: e.key == doomed)
    assert len({e.payload["score_id"] for e in deleted}) == 2
    assert all(e.payload["deleted_by"] == "trace-deletion" for e in deleted)

    r = await client.post("/api/public/scores", json={"traceId": doomed, "name": "late", "value": 1})
    assert r.status_code == 409
    assert r.json()["error"]["details"][0]["rule"] == "trace_deleted"
    assert await remaining() == [kept]


def test_only_deletions_and_experiment_links_are_decoded_from_the_trace_stream() -> None:
    from scoring.entrypoints.consumers import wanted_trace_event

    long_id = "t" * 200
    assert wanted_trace_event(make_envelope(TraceDeleted(trace_id=long_id), project="p" * 64, key=long_id).to_bytes())
    assert not wanted_trace_event(make_envelope(TraceIngested(trace_id=long_id), project="p", key=long_id).to_bytes())
    linked = TraceIngested(trace_id=long_id, trace=TraceData(id=long_id, dataset_run_name="run-1"))
    assert wanted_trace_event(make_envelope(linked, project="p", key=long_id).to_bytes())
