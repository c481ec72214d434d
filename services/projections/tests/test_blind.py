"""Blind review on every read of a trace's scores: a reviewer holding a trace in a blind queue reads only their own
scores of it (detail, public detail, lists, exports); a lead reads everything."""

from __future__ import annotations

import uuid
from typing import Any

from tally_shared.events import ScoreData, ScoreRecorded, TraceData, TraceIngested
from tally_shared.identity.auth import sign_user_token
from tally_shared.identity.store import IdentityStore
from tally_shared.testing.wait import eventually

from .conftest import Harness, at


async def _person(h: Harness, project: str, role: str) -> tuple[str, dict[str, str]]:
    identity: IdentityStore = h.app.state.identity  # type: ignore[attr-defined]
    user = await identity.create_user(f"{role}-{uuid.uuid4().hex[:8]}@example.com", "pw-long-enough")
    await identity.add_member(user.id, project, role)
    token = sign_user_token(h.app.state.secret_key, user.id)  # type: ignore[attr-defined]
    return user.id, {"authorization": f"Bearer {token}", "x-tally-project": project}


async def test_blind_reviewer_reads_only_own_scores_everywhere(harness: Harness) -> None:
    h = harness
    pid, auth = await h.project()
    ann, as_ann = await _person(h, pid, "reviewer")
    _, as_lead = await _person(h, pid, "member")
    peer = "u-peer"

    def score(sid: str, trace: str, source: str, author: str | None, value: float) -> ScoreRecorded:
        return ScoreRecorded(score=ScoreData(id=sid, name="quality", data_type="NUMERIC", value=value,
                                             trace_id=trace, source=source, author_user_id=author,
                                             config_id="cfg-q", timestamp=at(1)))

    envs = [h.env(TraceIngested(trace_id=t, trace=TraceData(id=t, name="chat", timestamp=at(0))), pid, t, at(0))
            for t in ("held", "free")]
    envs += [h.env(score(f"{t}-judge", t, "EVAL", None, 0.2), pid, t, at(1)) for t in ("held", "free")]
    envs += [h.env(score(f"{t}-peer", t, "ANNOTATION", peer, 1), pid, t, at(1)) for t in ("held", "free")]
    envs += [h.env(score("held-ann", "held", "ANNOTATION", ann, 5), pid, "held", at(1))]
    await h.send(*envs)

    async def scored() -> bool:
        r = await h.http.get("/api/v1/traces/held", headers=auth)
        return r.status_code == 200 and len(r.json()["scores"]) == 3

    await eventually(scored, what="trace with its three scores")
    h.blind.by_user[ann] = {"held"}

    def ids(scores: list[dict[str, Any]]) -> set[str]:
        return {s["id"] for s in scores}

    held = (await h.http.get("/api/v1/traces/held", headers=as_ann)).json()
    assert ids(held["scores"]) == {"held-ann"} and held["scores_hidden"] is True
    assert ids((await h.http.get("/api/v1/traces/free", headers=as_ann)).json()["scores"]) == {
        "free-judge", "free-peer"}
    public = (await h.http.get("/api/public/traces/held", headers=as_ann)).json()
    assert ids(public["scores"]) == {"held-ann"}
    listed = {t["id"]: t for t in (await h.http.get("/api/v1/traces", headers=as_ann)).json()["data"]}
    assert listed["held"]["scores"] == [] and listed["free"]["scores"]
    by_score = (await h.http.get("/api/v1/traces", headers=as_ann, params={"score_min": 0})).json()["data"]
    assert [t["id"] for t in by_score] == ["free"]
    export = await h.http.get("/api/v1/exports/dataset.jsonl", headers=as_ann, params={"config_id": "cfg-q"})
    assert export.status_code == 200 and '"held"' not in export.text and '"free"' in export.text
    # per-object rows of agreement leave the trace out too (the lead's show it)
    disputed = (await h.http.get("/api/v1/agreement", headers=as_ann, params={"config_id": "cfg-q"})).json()
    assert "held" not in {d["trace_id"] for d in disputed["most_disputed"]}
    disputed = (await h.http.get("/api/v1/agreement", headers=as_lead, params={"config_id": "cfg-q"})).json()
    assert "held" in {d["trace_id"] for d in disputed["most_disputed"]}
    # the lead sees everything
    lead = (await h.http.get("/api/v1/traces/held", headers=as_lead)).json()
    assert ids(lead["scores"]) == {"held-ann", "held-judge", "held-peer"} and "scores_hidden" not in lead
    export = await h.http.get("/api/v1/exports/dataset.jsonl", headers=as_lead, params={"config_id": "cfg-q"})
    assert '"held"' in export.text
