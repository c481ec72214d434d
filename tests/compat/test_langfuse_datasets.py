"""Datasets, dataset items, runs and run items, ``run_experiment`` over a dataset, and comments, driven with the
real ``langfuse`` 5.0.4 SDK (unchanged) through the base URL of a running stack.

SDK 5 has no client for dataset runs and run items (its experiments link traces by OTel attributes); those
Langfuse endpoints are called as documented, with plain HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langfuse import Evaluation, Langfuse

from tally_shared.testing.plugin import StackHandle
from tally_shared.testing.wait import eventually


@pytest.fixture(scope="module")
def lf(tally_stack: StackHandle) -> Iterator[Langfuse]:
    # One client for the module: the SDK keeps one resource manager per public key, and shutting a client down
    # stops it for every later client of the same key (their scores would be dropped).
    client = Langfuse(public_key=tally_stack.public_key, secret_key=tally_stack.secret_key,
                      base_url=tally_stack.base_url, flush_interval=0.2)
    yield client
    client.shutdown()


async def test_datasets_items_runs_and_comments(lf: Langfuse, tally_stack: StackHandle) -> None:
    name = f"golden-{uuid.uuid4().hex[:6]}"
    ds = await asyncio.to_thread(lf.create_dataset, name=name, description="capitals", metadata={"owner": "qa"})
    assert ds.name == name and ds.project_id == tally_stack.project_id
    item = await asyncio.to_thread(lf.create_dataset_item, dataset_name=name, input={"country": "Italy"},
                                   expected_output="Rome", metadata={"k": 1}, id=f"it-{uuid.uuid4().hex[:6]}")
    assert item.dataset_id == ds.id and item.status == "ACTIVE" and item.expected_output == "Rome"
    archived = await asyncio.to_thread(lf.create_dataset_item, dataset_name=name, id=item.id, status="ARCHIVED")
    assert archived.status == "ARCHIVED" and archived.input == {"country": "Italy"}
    extra = await asyncio.to_thread(lf.create_dataset_item, dataset_name=name, input="gone")

    api = lf.api
    got = await asyncio.to_thread(api.dataset_items.get, item.id)
    assert got.status == "ARCHIVED"
    listed = await asyncio.to_thread(api.dataset_items.list, dataset_name=name, page=1, limit=1)
    assert listed.meta.total_items == 2 and listed.meta.total_pages == 2
    await asyncio.to_thread(api.dataset_items.delete, extra.id)
    datasets = await asyncio.to_thread(api.datasets.list)
    assert name in [d.name for d in datasets.data]
    fetched = await asyncio.to_thread(lf.get_dataset, name)
    assert [i.id for i in fetched.items] == [item.id]

    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as http:
        r = await http.post("/api/public/dataset-run-items", json={
            "runName": "manual", "datasetItemId": item.id, "traceId": "manual-trace-1", "runDescription": "d"})
        assert r.status_code == 200, r.text
        runs = (await http.get(f"/api/public/datasets/{name}/runs")).json()
        assert [x["name"] for x in runs["data"]] == ["manual"] and runs["meta"]["totalItems"] == 1
        run = (await http.get(f"/api/public/datasets/{name}/runs/manual")).json()
        assert [(i["datasetItemId"], i["traceId"]) for i in run["datasetRunItems"]] == [(item.id, "manual-trace-1")]
        items = (await http.get("/api/public/dataset-run-items",
                                params={"datasetId": ds.id, "runName": "manual"})).json()
        assert items["data"][0]["datasetRunName"] == "manual"

        async def manual_run() -> list[dict[str, Any]] | None:
            data: list[dict[str, Any]] = (await http.get("/api/v1/experiments/runs",
                                                         params={"dataset_name": name})).json()["data"]
            return data if data else None

        assert [r["dataset_run_name"] for r in await eventually(manual_run, what="run in projections")] == [
            "manual"]
        assert (await http.delete(f"/api/public/datasets/{name}/runs/manual")).status_code == 200

    trace_id = lf.create_trace_id()
    created = await asyncio.to_thread(api.comments.create, project_id=tally_stack.project_id, object_type="TRACE",
                                      object_id=trace_id, content="needs a <second> look", author_user_id="qa-1")
    comment = await asyncio.to_thread(api.comments.get_by_id, created.id)
    assert (comment.content, comment.object_id, comment.author_user_id) == ("needs a <second> look", trace_id,
                                                                            "qa-1")
    page = await asyncio.to_thread(api.comments.get, object_type="TRACE", object_id=trace_id)
    assert [c.id for c in page.data] == [created.id] and page.meta.total_items == 1


async def test_run_experiment_over_a_dataset(lf: Langfuse, tally_stack: StackHandle) -> None:
    name = f"exp-{uuid.uuid4().hex[:6]}"
    run_name = f"baseline-{name}"
    await asyncio.to_thread(lf.create_dataset, name=name)
    answers = {"Italy": "Rome", "France": "Paris", "Spain": "Madrid"}
    for country, capital in answers.items():
        await asyncio.to_thread(lf.create_dataset_item, dataset_name=name, input={"country": country},
                                expected_output=capital)
    dataset = await asyncio.to_thread(lf.get_dataset, name)

    def task(*, item: Any, **_: Any) -> str:
        return "Rome" if item.input["country"] != "Spain" else "Madrid"

    def exact(*, output: Any, expected_output: Any = None, **_: Any) -> Evaluation:
        return Evaluation(name="exact", value=1.0 if output == expected_output else 0.0)

    # Without GET /api/public/projects the SDK only logs that it could not resolve the project (no URL).
    result = await asyncio.to_thread(dataset.run_experiment, name="capitals", run_name=run_name, task=task,
                                     evaluators=[exact])
    assert len(result.item_results) == 3
    await asyncio.to_thread(lf.flush)

    async with httpx.AsyncClient(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=20) as http:
        async def run_with_scores() -> dict[str, Any] | None:
            r = await http.get("/api/v1/experiments/runs", params={"dataset_name": name})
            runs = r.json()["data"]
            ok = (len(runs) == 1 and runs[0]["items"] == 3
                  and any(s["name"] == "exact" for s in runs[0]["score_names"]))
            return runs[0] if ok else None

        run = await eventually(run_with_scores, timeout=60, what="the experiment run with its evaluator scores")
        assert (run["dataset_name"], run["dataset_run_name"], run["traces"]) == (name, run_name, 3)

        async def compared() -> dict[str, Any] | None:
            r = await http.get("/api/v1/experiments/compare", params={"runs": run_name})
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 and len(body.get("items", [])) == 3 else None

        body = await eventually(compared, timeout=30, what="comparison")
        values = sorted(cell["scores"]["exact"]["automated"] for it in body["items"] for cell in it["runs"].values())
        assert values == [0.0, 1.0, 1.0]
        traces = {cell["trace_id"] for it in body["items"] for cell in it["runs"].values()}

        # The Langfuse runs API lists the same run, its items linking each dataset item to its trace.
        async def langfuse_run() -> dict[str, Any] | None:
            r = await http.get(f"/api/public/datasets/{name}/runs/{run_name}")
            found: dict[str, Any] | None = r.json() if r.status_code == 200 else None
            return found if found and len(found["datasetRunItems"]) == 3 else None

        lf_run = await eventually(langfuse_run, timeout=30, what="the run in the Langfuse runs API")
        assert {i["traceId"] for i in lf_run["datasetRunItems"]} == traces
        assert {i["datasetItemId"] for i in lf_run["datasetRunItems"]} == {i.id for i in dataset.items}
