"""Integration: the real app on the real broker and database. Every config type with valid and invalid values,
versions, edits, deletes, permissions, idempotent retries, and scores that arrive before their trace."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tally_shared.db import make_engine
from tally_shared.identity import IdentityStore
from tally_shared.identity.auth import sign_user_token

from .conftest import Project, Service, Tap


def tid() -> str:
    return uuid.uuid4().hex


async def make_config(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"cfg-{uuid.uuid4().hex[:8]}")
    r = await client.post("/api/v1/score-configs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def score(client: httpx.AsyncClient, config: dict[str, Any] | None, value: Any, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"value": value, "trace_id": extra.pop("trace_id", tid()), **extra}
    if config is not None:
        body["config_id"] = config["id"]
    return await client.post("/api/v1/scores", json=body)


def assert_rule(r: httpx.Response, field: str, rule: str) -> None:
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["field"] == field and d["rule"] == rule for d in details), details


async def test_numeric_config_bounds_step_and_type(client: httpx.AsyncClient, tap: Tap, project: Project) -> None:
    cfg = await make_config(client, data_type="NUMERIC", min_value=1, max_value=5, step=0.5,
                            guidelines="5: fully correct; 1: wrong. Skip if the answer is empty.")
    created = await tap.wait("ScoreConfigCreated", lambda e: e.key == cfg["id"])
    assert created.project == project.id
    assert created.payload["config"]["guidelines"].startswith("5: fully")
    assert created.payload["config"]["version"] == 1

    for ok in (1, 5, 2.5, 1.0):
        r = await score(client, cfg, ok)
        assert r.status_code == 201, r.text
        assert r.json()["value"] == ok and r.json()["config_version"] == 1
    assert_rule(await score(client, cfg, 0.5), "value", "minimum")
    assert_rule(await score(client, cfg, 5.5), "value", "maximum")
    assert_rule(await score(client, cfg, 2.25), "value", "step")
    assert_rule(await score(client, cfg, "4"), "value", "type")
    assert_rule(await score(client, cfg, True), "value", "type")
    assert_rule(await score(client, cfg, None), "value", "required")
    assert_rule(await score(client, cfg, 3, name="other-name"), "name", "matches_config")
    assert_rule(await score(client, cfg, 3, data_type="BOOLEAN"), "data_type", "matches_config")


async def test_invalid_config_definitions(client: httpx.AsyncClient) -> None:
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"data_type": "NUMERIC", "min_value": 5, "max_value": 1}, "max_value", "greater_than_min"),
        ({"data_type": "NUMERIC", "step": 0}, "step", "positive"),
        ({"data_type": "CATEGORICAL"}, "categories", "required"),
        ({"data_type": "CATEGORICAL", "categories": [{"label": "a", "value": 1}, {"label": "a", "value": 2}]},
         "categories", "unique_labels"),
        ({"data_type": "BOOLEAN", "min_value": 0}, "min_value", "not_allowed"),
        ({"data_type": "TEXT", "max_length": 0}, "max_length", "range"),
        ({"data_type": "TEXT", "name": "bad/name"}, "name", "pattern"),
    ]
    for body, field, rule in bad:
        body.setdefault("name", f"c-{uuid.uuid4().hex[:6]}")
        assert_rule(await client.post("/api/v1/score-configs", json=body), field, rule)
    r = await client.post("/api/v1/score-configs", json={"name": "x", "data_type": "NOPE"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "data_type"
    name = f"dup-{uuid.uuid4().hex[:6]}"
    await make_config(client, name=name, data_type="BOOLEAN")
    r = await client.post("/api/v1/score-configs", json={"name": name, "data_type": "TEXT"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "name_taken"


async def test_categorical_single_and_multi(client: httpx.AsyncClient, tap: Tap) -> None:
    cats = [{"label": "bad", "value": 0}, {"label": "ok", "value": 1}, {"label": "great", "value": 2}]
    cfg = await make_config(client, data_type="CATEGORICAL", categories=cats)
    r = await score(client, cfg, "great")
    assert r.status_code == 201 and r.json()["value"] == 2 and r.json()["string_value"] == "great"
    r = await score(client, cfg, 1)  # a category's numeric value names it too
    assert r.status_code == 201 and r.json()["string_value"] == "ok"
    assert_rule(await score(client, cfg, "superb"), "value", "category")
    assert_rule(await score(client, cfg, 7), "value", "category")
    assert_rule(await score(client, cfg, ["ok", "bad"]), "value", "multi_select")

    multi = await make_config(client, data_type="CATEGORICAL", categories=cats, multi_select=True)
    r = await score(client, multi, ["great", "bad"])
    assert r.status_code == 201, r.text
    assert r.json()["string_values"] == ["bad", "great"]  # config order
    ev = await tap.wait("ScoreRecorded", lambda e: e.payload["score"]["id"] == r.json()["id"])
    assert ev.payload["score"]["string_values"] == ["bad", "great"]
    assert_rule(await score(client, multi, ["ok", "ok"]), "value", "unique")
    assert_rule(await score(client, multi, []), "value", "required")
    assert_rule(await score(client, multi, ["ok", "nope"]), "value", "category")


async def test_boolean_and_text(client: httpx.AsyncClient) -> None:
    b = await make_config(client, data_type="BOOLEAN")
    assert [c["label"] for c in b["categories"]] == ["True", "False"]
    for value, expected in ((True, 1.0), (False, 0.0), (1, 1.0), (0.0, 0.0), ("true", 1.0)):
        r = await score(client, b, value)
        assert r.status_code == 201 and r.json()["value"] == expected, r.text
    assert_rule(await score(client, b, 2), "value", "type")
    assert_rule(await score(client, b, "yes"), "value", "type")

    t = await make_config(client, data_type="TEXT", max_length=10)
    assert (await score(client, t, "x" * 10)).status_code == 201
    assert_rule(await score(client, t, "x" * 11), "value", "length")
    assert_rule(await score(client, t, ""), "value", "length")
    assert_rule(await score(client, t, 3), "value", "type")
    # NUL (which PostgreSQL cannot hold) is kept as U+2400, as at every intake (tally_shared.content).
    r = await score(client, t, "a\x00b", comment="x\x00", metadata={"k\x00": "\x00"})
    assert r.status_code == 201, r.text
    assert (r.json()["string_value"], r.json()["comment"], r.json()["metadata"]) == (
        "a\u2400b", "x\u2400", {"k\u2400": "\u2400"})
    r = await client.post("/api/v1/scores", content=b'{"name": "%s", "config_id": "%s", "trace_id": "t", '
                          b'"value": "lone \\ud800", "comment": "big", "metadata": {"n": 1180591620717411303424}}'
                          % (t["name"].encode(), t["id"].encode()), headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert (r.json()["string_value"], r.json()["metadata"]) == ("lone \ufffd", {"n": float(2**70)})
    r = await client.post("/api/v1/scores", headers={"content-type": "application/json"},
                          content=b'{"name": "x", "trace_id": "t", "value": 1, "metadata": {"n": 1e400}}')
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "metadata.n", r.text


async def test_archived_and_foreign_configs_and_targets(client: httpx.AsyncClient, service: Service, tap: Tap,
                                                        new_project: Any) -> None:
    cfg = await make_config(client, data_type="BOOLEAN")
    r = await client.post(f"/api/v1/score-configs/{cfg['id']}/archive")
    assert r.status_code == 200 and r.json()["is_archived"] is True
    await tap.wait("ScoreConfigArchived", lambda e: e.key == cfg["id"])
    assert_rule(await score(client, cfg, 1), "config_id", "archived")
    r = await client.post(f"/api/v1/score-configs/{cfg['id']}/unarchive")
    assert r.json()["is_archived"] is False
    await tap.wait("ScoreConfigUpdated", lambda e: e.key == cfg["id"] and not e.payload["config"]["is_archived"])
    assert (await score(client, cfg, 1)).status_code == 201

    other: Project = await new_project()
    async with service.client(other.auth) as c2:
        assert_rule(await score(c2, cfg, 1), "config_id", "exists")
        assert (await c2.get(f"/api/v1/score-configs/{cfg['id']}")).status_code == 404
        assert (await c2.get(f"/api/public/score-configs/{cfg['id']}")).status_code == 404

    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1}), "trace_id", "target_required")
    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1, "observation_id": "o",
                                                          "session_id": "s"}), "observation_id", "requires_trace")
    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1, "trace_id": "t",
                                                          "session_id": "s"}), "session_id", "one_target")
    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1, "trace_id": "t",
                                                          "source": "ANNOTATION"}),
                "config_id", "required_for_annotation")
    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1, "trace_id": "t",
                                                          "source": "EVAL"}), "evaluator_name", "required_for_eval")
    assert_rule(await client.post("/api/v1/scores", json={"name": "n", "value": 1, "trace_id": "t",
                                                          "bogus": 1}), "bogus", "unknown_field")


async def test_config_versions(client: httpx.AsyncClient, tap: Tap) -> None:
    cfg = await make_config(client, data_type="NUMERIC", min_value=0, max_value=5, description="d1")
    s1 = (await score(client, cfg, 5)).json()
    assert s1["config_version"] == 1
    r = await client.patch(f"/api/v1/score-configs/{cfg['id']}", json={"description": "d2", "guidelines": "g"})
    assert r.json()["version"] == 1 and r.json()["description"] == "d2"
    r = await client.patch(f"/api/v1/score-configs/{cfg['id']}", json={"max_value": 10})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["max_value"] == 10
    ev = await tap.wait("ScoreConfigUpdated", lambda e: e.key == cfg["id"] and e.payload["config"]["version"] == 2)
    assert ev.payload["config"]["description"] == "d2" and ev.payload["config"]["min_value"] == 0
    s2 = (await score(client, cfg, 8)).json()
    assert s2["config_version"] == 2
    versions = (await client.get(f"/api/v1/score-configs/{cfg['id']}/versions")).json()["data"]
    assert [(v["version"], v["max_value"]) for v in versions] == [(1, 5), (2, 10)]
    old = (await client.get(f"/api/v1/scores/{s1['id']}")).json()
    assert old["config_version"] == 1 and old["value"] == 5
    r = await client.patch(f"/api/v1/score-configs/{cfg['id']}", json={"data_type": "BOOLEAN"})
    assert r.json()["version"] == 3 and r.json()["data_type"] == "BOOLEAN" and r.json()["max_value"] is None


async def test_edit_delete_and_history(client: httpx.AsyncClient, tap: Tap) -> None:
    cfg = await make_config(client, data_type="NUMERIC", min_value=0, max_value=10)
    trace = tid()
    s = (await score(client, cfg, 3, trace_id=trace, comment="first")).json()
    r = await client.patch(f"/api/v1/scores/{s['id']}", json={"value": 7, "comment": "second thoughts"})
    assert r.status_code == 200 and r.json()["value"] == 7 and r.json()["revision"] == 2
    ev = await tap.wait("ScoreUpdated", lambda e: e.payload["score"]["id"] == s["id"])
    assert ev.key == trace and ev.payload["score"]["value"] == 7
    assert_rule(await client.patch(f"/api/v1/scores/{s['id']}", json={"value": 11}), "value", "maximum")
    r = await client.delete(f"/api/v1/scores/{s['id']}")
    assert r.status_code == 204
    ev = await tap.wait("ScoreDeleted", lambda e: e.payload["score_id"] == s["id"])
    assert ev.key == trace and ev.payload["trace_id"] == trace
    assert (await client.get(f"/api/v1/scores/{s['id']}")).status_code == 404
    assert (await client.delete(f"/api/v1/scores/{s['id']}")).status_code == 404
    hist = (await client.get(f"/api/v1/scores/{s['id']}/history")).json()["data"]
    assert [(h["revision"], h["action"], h["score"]["value"]) for h in hist] == [
        (1, "created", 3), (2, "updated", 7), (3, "deleted", 7)]
    assert hist[0]["score"]["comment"] == "first"


async def test_idempotent_retries(client: httpx.AsyncClient, tap: Tap) -> None:
    key = f"k-{uuid.uuid4().hex}"
    body = {"name": "helpful", "value": 0.5, "trace_id": tid()}
    first = await client.post("/api/v1/scores", json=body, headers={"Idempotency-Key": key})
    again = await client.post("/api/v1/scores", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "replayed"

    # Langfuse clients retry with the same score id: one score, one event.
    sid = uuid.uuid4().hex
    item = {"id": sid, "name": "acc", "value": 1, "traceId": tid(), "timestamp": "2026-01-01T00:00:00Z"}
    for _ in range(3):
        r = await client.post("/api/public/scores", json=item)
        assert r.status_code == 200 and r.json() == {"id": sid}
    batch = [{**item}, {**item}]
    assert (await client.post("/api/public/scores", json=batch)).status_code == 202
    await tap.wait("ScoreRecorded", lambda e: e.payload["score"]["id"] == first.json()["id"])
    await tap.wait("ScoreRecorded", lambda e: e.payload["score"]["id"] == sid)
    await asyncio.sleep(0.5)
    # Consumers apply each envelope id once, so "one event" means one distinct envelope id.
    assert len({e.id for e in tap.of("ScoreRecorded", lambda e: e.payload["score"]["id"] == first.json()["id"])}) == 1
    assert len({e.id for e in tap.of("ScoreRecorded", lambda e: e.payload["score"]["id"] == sid)}) == 1
    assert not tap.of("ScoreUpdated", lambda e: e.payload["score"]["id"] == sid)

    # The same id with a new value is an update (Langfuse upsert semantics).
    r = await client.post("/api/public/scores", json={**item, "value": 0})
    assert r.status_code == 200
    ev = await tap.wait("ScoreUpdated", lambda e: e.payload["score"]["id"] == sid)
    assert ev.payload["score"]["value"] == 0


async def test_score_before_trace(client: httpx.AsyncClient, tap: Tap, project: Project) -> None:
    """Scoring never looks traces up: a score for a trace nobody has seen yet is recorded and published,
    keyed by that trace id, so projections can join it when the trace arrives."""
    trace = f"not-yet-{uuid.uuid4().hex}"
    r = await client.post("/api/public/scores", json={"name": "early", "value": 1, "traceId": trace,
                                                      "observationId": "obs-1"})
    assert r.status_code == 200
    ev = await tap.wait("ScoreRecorded", lambda e: e.key == trace)
    assert ev.project == project.id
    assert ev.payload["score"]["trace_id"] == trace and ev.payload["score"]["observation_id"] == "obs-1"
    listed = (await client.get("/api/public/v3/scores", params={"traceId": trace, "fields": "subject"})).json()
    assert listed["data"][0]["subject"] == {"kind": "observation", "id": "obs-1", "traceId": trace}


async def test_session_and_run_scores_keyed_by_target(client: httpx.AsyncClient, tap: Tap) -> None:
    session = f"s-{uuid.uuid4().hex}"
    run = f"r-{uuid.uuid4().hex}"
    assert (await client.post("/api/v1/scores", json={"name": "n", "value": 1, "session_id": session})).status_code \
        == 201
    assert (await client.post("/api/v1/scores", json={"name": "n", "value": 1, "dataset_run_id": run})).status_code \
        == 201
    await tap.wait("ScoreRecorded", lambda e: e.key == session)
    await tap.wait("ScoreRecorded", lambda e: e.key == run)


async def test_permissions(service: Service, project: Project, client: httpx.AsyncClient, new_project: Any) -> None:
    engine = make_engine(service.database_url, pool_size=1)
    store = IdentityStore(engine)
    suffix = uuid.uuid4().hex[:8]
    alice = await store.create_user(f"alice-{suffix}@t.io", "pw")
    bob = await store.create_user(f"bob-{suffix}@t.io", "pw")
    boss = await store.create_user(f"boss-{suffix}@t.io", "pw")
    viewer = await store.create_user(f"viewer-{suffix}@t.io", "pw")
    for user, role in ((alice, "reviewer"), (bob, "reviewer"), (boss, "admin"), (viewer, "viewer")):
        await store.add_member(user.id, project.id, role)
    await engine.dispose()

    def as_user(user_id: str) -> httpx.AsyncClient:
        token = sign_user_token(service.settings.secret_key, user_id)
        return service.client({"Authorization": f"Bearer {token}", "X-Tally-Project": project.id})

    cfg = await make_config(client, data_type="NUMERIC", min_value=0, max_value=10)
    async with as_user(alice.id) as a, as_user(bob.id) as b, as_user(boss.id) as admin, as_user(viewer.id) as v:
        r = await a.post("/api/v1/scores", json={"config_id": cfg["id"], "value": 4, "trace_id": tid(),
                                                 "source": "ANNOTATION", "author_user_id": "someone-else"})
        assert r.status_code == 201 and r.json()["author_user_id"] == alice.id
        sid = r.json()["id"]
        assert (await b.patch(f"/api/v1/scores/{sid}", json={"value": 1})).status_code == 403
        assert (await b.delete(f"/api/v1/scores/{sid}")).status_code == 403
        r = await b.post("/api/public/scores", json={"id": sid, "configId": cfg["id"], "name": cfg["name"],
                                                     "value": 2, "traceId": r.json()["trace_id"],
                                                     "source": "ANNOTATION"})
        assert r.status_code == 403
        assert (await a.patch(f"/api/v1/scores/{sid}", json={"value": 5})).json()["value"] == 5
        assert (await admin.patch(f"/api/v1/scores/{sid}", json={"value": 6})).json()["value"] == 6
        assert (await v.post("/api/v1/scores", json={"config_id": cfg["id"], "value": 4,
                                                     "trace_id": tid()})).status_code == 403
        assert (await a.post("/api/v1/score-configs", json={"name": "x", "data_type": "TEXT"})).status_code == 403
        assert (await b.delete(f"/api/v1/scores/{sid}")).status_code == 403
        assert (await a.delete(f"/api/v1/scores/{sid}")).status_code == 204
        hist = (await admin.get(f"/api/v1/scores/{sid}/history")).json()["data"]
        assert [h["actor"] for h in hist] == [alice.id, alice.id, boss.id, alice.id]

    # Project isolation: another project's key sees nothing of this one.
    s = (await score(client, None, 1, name="iso")).json()
    other: Project = await new_project()
    async with service.client(other.auth) as c2:
        assert (await c2.get(f"/api/v1/scores/{s['id']}")).status_code == 404
        assert (await c2.get(f"/api/public/scores/{s['id']}")).status_code == 404
        assert (await c2.delete(f"/api/public/scores/{s['id']}")).status_code == 404
        assert (await c2.patch(f"/api/v1/scores/{s['id']}", json={"value": 2})).status_code == 404
        assert (await c2.get("/api/public/v3/scores")).json()["data"] == []
        assert (await c2.get("/api/public/score-configs")).json()["meta"]["totalItems"] == 0
    async with service.client({"Authorization": "Basic Zm9vOmJhcg=="}) as bad:
        assert (await bad.get("/api/public/v3/scores")).status_code == 401


async def test_lists_filters_and_pagination(client: httpx.AsyncClient) -> None:
    trace = tid()
    cfg = await make_config(client, data_type="NUMERIC", min_value=0, max_value=100)
    ids = []
    for i in range(7):
        r = await client.post("/api/public/scores", json={
            "name": cfg["name"], "configId": cfg["id"], "value": i * 10, "traceId": trace,
            "timestamp": f"2026-03-01T00:00:0{i}Z", "comment": f"c{i}"})
        ids.append(r.json()["id"])
    await client.post("/api/public/scores", json={"name": "label", "value": "yes", "traceId": trace})

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"traceId": trace, "limit": 3, "name": cfg["name"], "fields": "details"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/public/v3/scores", params=params)).json()
        seen += [d["id"] for d in page["data"]]
        assert all(d["configId"] == cfg["id"] and d["comment"].startswith("c") for d in page["data"])
        cursor = page["meta"].get("cursor")
        if not cursor:
            break
    assert seen == list(reversed(ids))

    r = await client.get("/api/public/v3/scores", params={"traceId": trace, "dataType": "NUMERIC",
                                                          "valueMin": 20, "valueMax": 40})
    assert sorted(d["value"] for d in r.json()["data"]) == [20, 30, 40]
    r = await client.get("/api/public/v3/scores", params={"traceId": trace, "dataType": "CATEGORICAL",
                                                          "value": "yes"})
    assert [d["value"] for d in r.json()["data"]] == ["yes"]
    for bad in ({"fields": "nope"}, {"limit": 101}, {"valueMin": 1}, {"observationId": "o"},
                {"traceId": "t", "sessionId": "s"}, {"value": "1"}, {"cursor": "!!"}):
        r = await client.get("/api/public/v3/scores", params=bad)
        assert r.status_code == 400, (bad, r.text)

    r = (await client.get("/api/public/v2/scores", params={"traceId": trace, "limit": 5, "page": 2})).json()
    assert r["meta"] == {"page": 2, "limit": 5, "totalItems": 8, "totalPages": 2}
    assert len(r["data"]) == 3
    r = (await client.get("/api/public/v2/scores", params={"traceId": trace, "operator": ">=", "value": 50})).json()
    assert sorted(d["value"] for d in r["data"]) == [50, 60]
    r = (await client.get("/api/public/v2/scores", params={"scoreIds": ",".join(ids[:2])})).json()
    assert {d["id"] for d in r["data"]} == set(ids[:2])
    native = (await client.get("/api/v1/scores", params={"trace_id": trace, "limit": 100})).json()
    assert len(native["data"]) == 8 and native["next_cursor"] is None


async def test_batches(client: httpx.AsyncClient, tap: Tap) -> None:
    trace = tid()
    items: list[Any] = [{"name": "auto", "value": i / 10, "trace_id": trace, "source": "EVAL",
                         "evaluator_name": "judge", "evaluator_version": "2"} for i in range(20)]
    items[3] = {"name": "auto", "value": "NaN?", "trace_id": trace, "data_type": "NUMERIC"}
    items[5] = "not an object"
    r = await client.post("/api/v1/scores/batch", json={"scores": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 18 and body["rejected"] == 2
    assert body["results"][3]["errors"][0] == {"field": "value", "rule": "type",
                                               "message": "a NUMERIC score needs a number"}
    assert body["results"][5]["status"] == "rejected"
    ok_ids = {x["id"] for x in body["results"] if x["status"] == "created"}

    async def all_published() -> bool:
        got = {e.payload["score"]["id"] for e in tap.of("ScoreRecorded", lambda e: e.key == trace)}
        return got == ok_ids

    from tally_shared.testing.wait import eventually

    await eventually(all_published, timeout=20, what="every accepted batch score on Kafka")
    ev = tap.of("ScoreRecorded", lambda e: e.key == trace)[0]
    assert ev.payload["score"]["evaluator_name"] == "judge" and ev.payload["score"]["source"] == "EVAL"

    # Langfuse SDK 5 batch shape: 207 with per-score errors naming field and rule.
    r = await client.post("/api/public/scores", json=[
        {"name": "a", "value": 1, "traceId": trace}, {"name": "b", "value": 1}])
    assert r.status_code == 207
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == 1
    err = r.json()["errors"][0]
    assert err["index"] == 1 and err["errors"][0]["field"] == "traceId" and "traceId" in err["message"]


async def test_metrics_count_outcomes_and_rules(client: httpx.AsyncClient, service: Service) -> None:
    before = (await client.get("/metrics")).text
    cfg = await make_config(client, data_type="NUMERIC", max_value=1)
    assert_rule(await score(client, cfg, 2), "value", "maximum")
    assert (await score(client, cfg, 1)).status_code == 201
    text = (await client.get("/metrics")).text

    def count(body: str, line: str) -> float:
        for row in body.splitlines():
            if row.startswith(line + " "):
                return float(row.split()[-1])
        return 0.0

    rule = 'tally_scoring_rejections_total{rule="maximum"}'
    assert count(text, rule) == count(before, rule) + 1
    assert 'tally_events_published_total{topic="tally.scores",type="ScoreRecorded"}' in text

    async def lag_reported() -> bool:
        body = (await client.get("/metrics")).text
        gid = service.settings.group_id
        return f'tally_consumer_lag{{group="{gid}",partition="0",topic="tally.score-commands"}}' in body

    from tally_shared.testing.wait import eventually

    await eventually(lag_reported, timeout=15, what="consumer lag gauge for scoring's group")


async def test_queue_provenance_is_recorded_and_filterable(client: httpx.AsyncClient, tap: Tap) -> None:
    cfg = await make_config(client, data_type="BOOLEAN")
    queue, item = f"q-{uuid.uuid4().hex[:8]}", f"i-{uuid.uuid4().hex[:8]}"
    r = await score(client, cfg, True, source="ANNOTATION", queue_id=queue, queue_item_id=item,
                    author_user_id="reviewer-7")
    assert r.status_code == 201
    ev = await tap.wait("ScoreRecorded", lambda e: e.payload["score"]["id"] == r.json()["id"])
    s = ev.payload["score"]
    assert (s["queue_id"], s["queue_item_id"], s["author_user_id"], s["config_version"]) == (queue, item,
                                                                                            "reviewer-7", 1)
    listed = (await client.get("/api/v1/scores", params={"queue_id": queue, "author_user_id": "reviewer-7"})).json()
    assert [x["id"] for x in listed["data"]] == [r.json()["id"]]
    v3 = (await client.get("/api/public/v3/scores", params={"queueId": queue, "fields": "annotation"})).json()
    assert v3["data"][0]["queueId"] == queue and v3["data"][0]["authorUserId"] == "reviewer-7"


async def test_a_token_signed_with_the_old_built_in_secret_is_refused(service: Service, project: Project) -> None:
    engine = make_engine(service.database_url, pool_size=1)
    store = IdentityStore(engine)
    member = await store.create_user(f"member-{uuid.uuid4().hex[:8]}@t.io", "pw")
    await store.add_member(member.id, project.id, "admin")
    await engine.dispose()

    def bearer(secret: str) -> dict[str, str]:
        return {"X-Tally-Project": project.id, "Authorization": f"Bearer {sign_user_token(secret, member.id)}"}

    # The service's own secret works; the built-in default of earlier versions (public) does not.
    async with service.client(bearer(service.settings.secret_key)) as ok, \
            service.client(bearer("tally-dev-secret-change-me")) as forged:
        assert (await ok.get("/api/v1/score-configs")).status_code == 200
        assert (await forged.get("/api/v1/score-configs")).status_code == 401
