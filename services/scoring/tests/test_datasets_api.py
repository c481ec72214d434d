"""Integration: datasets, items (create, upsert, archive, delete), runs and run items, and comments, on the real
broker and database; every change is stored and published before the 2xx."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from tally_shared.db import make_engine
from tally_shared.envelope import make_envelope
from tally_shared.events import TraceData, TraceIngested
from tally_shared.identity import IdentityStore
from tally_shared.identity.auth import sign_user_token
from tally_shared.testing.wait import eventually
from tally_shared.topics import TRACES

from .conftest import Project, Service, Tap


def name() -> str:
    return f"ds-{uuid.uuid4().hex[:8]}"


async def test_datasets_items_and_events(client: httpx.AsyncClient, project: Project, tap: Tap) -> None:
    n = name()
    r = await client.post("/api/public/v2/datasets", json={"name": n, "description": "golden", "metadata": {"a": 1}})
    assert r.status_code == 200, r.text
    ds = r.json()
    assert ds["name"] == n and ds["projectId"] == project.id and ds["metadata"] == {"a": 1}
    again = await client.post("/api/public/v2/datasets", json={"name": n})
    assert again.json()["id"] == ds["id"] and again.json()["description"] == "golden"
    # Langfuse's create is an upsert by name: what is given replaces, null leaves as is.
    edited = (await client.post("/api/public/v2/datasets", json={"name": n, "description": "v2"})).json()
    assert (edited["id"], edited["description"], edited["metadata"]) == (ds["id"], "v2", {"a": 1})
    await tap.wait("DatasetUpdated", lambda e: e.project == project.id and e.payload["dataset"]["description"] == "v2")
    await tap.wait("DatasetCreated", lambda e: e.project == project.id)

    r = await client.post("/api/public/dataset-items", json={
        "datasetName": n, "id": "item-1", "input": {"q": "2+2"}, "expectedOutput": "4", "sourceTraceId": "t-1"})
    assert r.status_code == 200, r.text
    item = r.json()
    assert (item["status"], item["datasetId"], item["expectedOutput"]) == ("ACTIVE", ds["id"], "4")
    # Upsert by id: fields given replace, others stay.
    r = await client.post("/api/public/dataset-items", json={"datasetName": n, "id": "item-1", "status": "ARCHIVED"})
    assert r.json()["status"] == "ARCHIVED" and r.json()["input"] == {"q": "2+2"}
    await client.post("/api/public/dataset-items", json={"datasetName": n, "input": "other"})
    page = (await client.get("/api/public/dataset-items", params={"datasetName": n, "limit": 1})).json()
    assert page["meta"] == {"page": 1, "limit": 1, "totalItems": 2, "totalPages": 2}
    by_trace = (await client.get("/api/public/dataset-items", params={"sourceTraceId": "t-1"})).json()["data"]
    assert [i["id"] for i in by_trace] == ["item-1"]
    await tap.wait("DatasetItemUpserted", lambda e: e.project == project.id
                   and e.payload["item"]["status"] == "ARCHIVED")

    r = await client.delete("/api/public/dataset-items/item-1")
    assert r.status_code == 200
    assert (await client.get("/api/public/dataset-items/item-1")).status_code == 404
    await tap.wait("DatasetItemDeleted", lambda e: e.project == project.id and e.payload["item_id"] == "item-1")
    # Created once: the second create of the same name published nothing (its answer came before this event).
    assert len(tap.of("DatasetCreated", lambda e: e.project == project.id)) == 1

    assert (await client.post("/api/public/dataset-items", json={"datasetName": "nope"})).status_code == 404
    other = name()
    await client.post("/api/public/v2/datasets", json={"name": other})
    r = await client.post("/api/public/dataset-items", json={"datasetName": other, "id": by_trace[0]["id"] + "x"})
    assert r.status_code == 200
    r = await client.post("/api/public/dataset-items", json={"datasetName": n, "id": by_trace[0]["id"] + "x"})
    assert r.status_code == 409, r.text


async def test_runs_and_run_items(client: httpx.AsyncClient, project: Project, tap: Tap) -> None:
    n = name()
    ds = (await client.post("/api/public/v2/datasets", json={"name": n})).json()
    item = (await client.post("/api/public/dataset-items", json={"datasetName": n, "input": 1})).json()
    r = await client.post("/api/public/dataset-run-items", json={
        "runName": "run-a", "datasetItemId": item["id"], "traceId": "trace-9", "runDescription": "baseline"})
    assert r.status_code == 200, r.text
    ev = await tap.wait("DatasetRunItemCreated", lambda e: e.project == project.id)
    assert ev.key == "trace-9" and ev.payload["run_item"]["dataset_name"] == n

    runs = (await client.get(f"/api/public/datasets/{n}/runs")).json()
    assert [x["name"] for x in runs["data"]] == ["run-a"] and runs["data"][0]["datasetName"] == n
    run = (await client.get(f"/api/public/datasets/{n}/runs/run-a")).json()
    assert [i["traceId"] for i in run["datasetRunItems"]] == ["trace-9"]
    listed = (await client.get("/api/public/dataset-run-items", params={"datasetId": ds["id"], "runName": "run-a"}))
    assert listed.json()["data"][0]["datasetItemId"] == item["id"]

    missing = await client.post("/api/public/dataset-run-items", json={"runName": "r", "datasetItemId": "nope",
                                                                       "traceId": "t"})
    assert missing.status_code == 404
    no_trace = await client.post("/api/public/dataset-run-items", json={"runName": "r",
                                                                        "datasetItemId": item["id"]})
    assert no_trace.status_code == 422
    assert (await client.delete(f"/api/public/datasets/{n}/runs/run-a")).status_code == 200
    assert (await client.get(f"/api/public/datasets/{n}/runs/run-a")).status_code == 404


async def test_comments(client: httpx.AsyncClient, project: Project, tap: Tap) -> None:
    body = {"projectId": "ignored", "objectType": "TRACE", "objectId": "t-c", "content": "<b>look</b>",
            "authorUserId": "u-1"}
    r = await client.post("/api/public/comments", json=body)
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    got = (await client.get(f"/api/public/comments/{cid}")).json()
    assert (got["content"], got["projectId"], got["authorUserId"]) == ("<b>look</b>", project.id, "u-1")
    listed = (await client.get("/api/public/comments", params={"objectType": "TRACE", "objectId": "t-c"})).json()
    assert [c["id"] for c in listed["data"]] == [cid] and listed["meta"]["totalItems"] == 1
    await tap.wait("CommentCreated", lambda e: e.project == project.id and e.key == "t-c")

    too_long = await client.post("/api/public/comments", json={**body, "content": "x" * 5001})
    assert too_long.status_code == 422 and too_long.json()["error"]["details"][0]["field"] == "content"
    bad_type = await client.post("/api/public/comments", json={**body, "objectType": "SCORE"})
    assert bad_type.status_code == 422 and bad_type.json()["error"]["details"][0]["field"] == "objectType"


async def test_traces_of_run_experiment_become_run_items(client: httpx.AsyncClient, project: Project,
                                                         service: Service) -> None:
    """The SDK's run_experiment links traces by span attributes only; scoring records them as runs of the dataset
    (once, however often the trace's events name the run)."""
    n = name()
    ds = (await client.post("/api/public/v2/datasets", json={"name": n})).json()
    item = (await client.post("/api/public/dataset-items", json={"datasetName": n, "input": 1})).json()
    link = TraceData(id="exp-trace", dataset_run_name="sdk-run", dataset_item_id=item["id"], dataset_id=ds["id"])
    other = TraceData(id="local-trace", dataset_run_name="sdk-run", dataset_item_id="not-a-dataset-item")
    second = (await client.post("/api/public/dataset-items", json={"datasetName": n, "input": 2})).json()
    # Same key, so applied in this order: the second item's link arrives after the repeated first one.
    last = TraceData(id="exp-trace", dataset_run_name="sdk-run", dataset_item_id=second["id"])
    envs = [make_envelope(TraceIngested(trace_id=t.id, trace=t), project=project.id, key=t.id)
            for t in (other, TraceData(id="plain", name="no run"), link, link, last)]
    producer = AIOKafkaProducer(bootstrap_servers=service.kafka)
    await producer.start()
    try:
        for e in envs:
            await producer.send_and_wait(TRACES.name, e.to_bytes(), key=e.key.encode())
    finally:
        await producer.stop()

    async def run() -> dict[str, Any] | None:
        r = await client.get(f"/api/public/datasets/{n}/runs/sdk-run")
        found: dict[str, Any] | None = r.json() if r.status_code == 200 else None
        return found if found and len(found["datasetRunItems"]) >= 2 else None

    body = await eventually(run, what="the run recorded from the trace")
    assert sorted((i["traceId"], i["datasetItemId"]) for i in body["datasetRunItems"]) == sorted(
        [("exp-trace", item["id"]), ("exp-trace", second["id"])])


async def test_who_may_curate_and_comment(service: Service, project: Project, client: httpx.AsyncClient) -> None:
    engine = make_engine(service.database_url, pool_size=1)
    store = IdentityStore(engine)
    suffix = uuid.uuid4().hex[:8]
    reviewer = await store.create_user(f"rev-{suffix}@t.io", "pw")
    viewer = await store.create_user(f"view-{suffix}@t.io", "pw")
    await store.add_member(reviewer.id, project.id, "reviewer")
    await store.add_member(viewer.id, project.id, "viewer")
    await engine.dispose()

    def as_user(user_id: str) -> httpx.AsyncClient:
        token = sign_user_token(service.settings.secret_key, user_id)
        return service.client({"Authorization": f"Bearer {token}", "X-Tally-Project": project.id})

    n = name()
    await client.post("/api/public/v2/datasets", json={"name": n})
    comment = {"projectId": project.id, "objectType": "TRACE", "objectId": "t-1", "content": "hm",
               "authorUserId": "someone-else"}
    async with as_user(reviewer.id) as r, as_user(viewer.id) as v:
        assert (await r.post("/api/public/v2/datasets", json={"name": name()})).status_code == 403
        assert (await r.post("/api/public/dataset-items", json={"datasetName": n, "input": 1})).status_code == 200
        created = await r.post("/api/public/comments", json=comment)
        assert created.status_code == 200
        # A person always comments as themselves.
        got = (await r.get(f"/api/public/comments/{created.json()['id']}")).json()
        assert got["authorUserId"] == reviewer.id
        assert (await v.post("/api/public/comments", json=comment)).status_code == 403
        assert (await v.post("/api/public/dataset-items", json={"datasetName": n})).status_code == 403
        assert (await v.get("/api/public/dataset-items", params={"datasetName": n})).json()["meta"]["totalItems"] == 1
