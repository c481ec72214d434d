"""Add to dataset from a reviewed item (the reviewer's labels become a test set), and comments on the trace page."""

from __future__ import annotations

from fastapi.testclient import TestClient

from console.testing.pages import Env, csrf_of, sign_in


def _reviewed(env: Env, email: str) -> tuple[str, str, TestClient]:
    w = env.world
    cfg = w.add_config("correctness", "CATEGORICAL", categories=[{"label": "wrong", "value": 0},
                                                                {"label": "right", "value": 1}])
    q = w.add_queue("Triage", [cfg])
    t = w.add_trace("tr-1", input={"question": "capital of Italy?"}, output="Milan")
    w.add_item(q["id"], t["id"])
    c = env.client()
    sign_in(c, email)
    item_url = c.get(f"/queues/{q['id']}/review").headers["location"]
    token = csrf_of(c.get(item_url).text)
    r = c.post(f"{item_url}/complete", data={"csrf": token, f"score:{cfg['id']}": "wrong", "comment": "it is Rome"})
    assert r.status_code == 303
    return item_url, token, c


def test_add_to_dataset_keeps_input_corrected_output_and_scores(env: Env) -> None:
    item_url, token, c = _reviewed(env, "lead@t.test")
    page = c.get(item_url)
    assert 'id="add-to-dataset"' in page.text
    r = c.post(f"{item_url}/add-to-dataset",
               data={"csrf": token, "dataset": "golden", "expected_output": "Rome"})
    assert r.status_code == 303 and r.headers["location"] == item_url
    (item,) = env.world.dataset_items.values()
    assert item["datasetName"] == "golden" and item["input"] == {"question": "capital of Italy?"}
    assert item["expectedOutput"] == "Rome" and item["sourceTraceId"] == "tr-1"
    assert item["metadata"]["scores"] == {"correctness": "wrong"} and item["metadata"]["comment"] == "it is Rome"
    # Added again: the same dataset item is updated, not duplicated; an empty correction keeps the trace's output.
    c.post(f"{item_url}/add-to-dataset", data={"csrf": token, "dataset": "golden"})
    (item,) = env.world.dataset_items.values()
    assert item["expectedOutput"] == "Milan"


def test_a_reviewer_adds_only_to_an_existing_dataset(env: Env) -> None:
    item_url, token, c = _reviewed(env, "rev@t.test")
    r = c.post(f"{item_url}/add-to-dataset", data={"csrf": token, "dataset": "nope"})
    assert r.status_code == 303 and not env.world.dataset_items
    assert "ask an admin or member" in c.get(item_url).text
    env.world.datasets["golden"] = {"id": "ds-1", "name": "golden"}
    c.post(f"{item_url}/add-to-dataset", data={"csrf": token, "dataset": "golden"})
    assert [i["datasetName"] for i in env.world.dataset_items.values()] == ["golden"]
    assert ("create_dataset", "golden") not in env.world.calls


def test_comments_on_the_trace_page_are_escaped(env: Env) -> None:
    env.world.add_trace("tr-9", observations=[{"id": "obs-1", "name": "llm", "type": "GENERATION"}])
    c = env.client()
    sign_in(c, "rev@t.test")
    token = csrf_of(c.get("/traces/tr-9").text)
    r = c.post("/traces/tr-9/comments", data={"csrf": token, "content": "<script>alert(1)</script> wrong"})
    assert r.status_code == 303
    c.post("/traces/tr-9/comments", data={"csrf": token, "content": "this call", "observation_id": "obs-1"})
    html = c.get("/traces/tr-9").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; wrong" in html and "<script>alert(1)" not in html
    assert "this call" not in html  # observation comments show when the observation is focused
    assert "this call" in c.get("/traces/tr-9?observation=obs-1").text
    too_long = c.post("/traces/tr-9/comments", data={"csrf": token, "content": "x" * 5001})
    assert too_long.status_code == 422 and len(env.world.comments) == 2
    viewer = env.client()
    sign_in(viewer, "view@t.test")
    assert 'id="comment-form"' not in viewer.get("/traces/tr-9").text
