"""The review screen: lease, scores, complete-and-next, skip and flag, heartbeat, going back to edit."""

from __future__ import annotations

from typing import Any

from console.testing.pages import Env, csrf_of, sign_in


def _setup(env: Env, items: int = 2, **queue: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    w = env.world
    correctness = w.add_config("correctness", "CATEGORICAL", categories=[{"label": "wrong", "value": 0},
                                                                        {"label": "right", "value": 1}],
                               description="Is it right?")
    helpful = w.add_config("helpfulness", "NUMERIC", min_value=1, max_value=5, step=1)
    q = w.add_queue("Triage", [correctness, helpful], description="Check the answer against the docs.", **queue)
    q["score_configs"][1]["required"] = False
    for i in range(items):
        t = w.add_trace(f"tr-{i}", name=f"chat-{i}", input={"question": f"q{i}"},
                        scores=[{"id": f"auto-{i}", "name": "judge", "value": 0.2, "source": "EVAL",
                                 "data_type": "NUMERIC"}])
        w.add_item(q["id"], t["id"])
    return q, [correctness, helpful], w.queues[q["id"]]


def test_complete_and_next_records_scores_and_completes_the_item(env: Env) -> None:
    q, (correctness, helpful), _ = _setup(env)
    c = env.client()
    sign_in(c, "rev@t.test")
    r = c.get(f"/queues/{q['id']}/review")
    assert r.status_code == 303
    item_url = r.headers["location"]
    page = c.get(item_url)
    assert page.status_code == 200
    html = page.text
    assert "Check the answer against the docs." in html and "Is it right?" in html
    assert 'data-lease-expires="' in html and "judge" in html  # automated score shown (not blind)
    token = csrf_of(html)
    item_id = item_url.rsplit("/", 1)[1]
    r = c.post(f"{item_url}/complete", data={"csrf": token, f"score:{correctness['id']}": "right",
                                             f"score:{helpful['id']}": "4", "comment": "good"})
    # straight to the next item: no second redirect through /review
    nxt = r.headers["location"]
    assert r.status_code == 303 and nxt.startswith(f"/queues/{q['id']}/items/") and nxt != item_url
    created = [d for n, d in env.world.calls if n == "create_score"]
    assert {(d["name"], d["value"]) for d in created} == {("correctness", "right"), ("helpfulness", 4.0)}
    assert all(d["source"] == "ANNOTATION" and d["queue_item_id"] == item_id and d["comment"] == "good"
               for d in created)
    assert env.world.items[item_id]["status"] == "completed"
    # the next one is held: reopening the queue resumes it
    assert c.get(f"/queues/{q['id']}/review").headers["location"] == nxt


def test_missing_required_field_saves_nothing(env: Env) -> None:
    q, (_correctness, helpful), _ = _setup(env)
    c = env.client()
    sign_in(c, "rev@t.test")
    item_url = c.get(f"/queues/{q['id']}/review").headers["location"]
    token = csrf_of(c.get(item_url).text)
    r = c.post(f"{item_url}/complete", data={"csrf": token, f"score:{helpful['id']}": "9"})
    assert r.status_code == 422
    assert "correctness: required" in r.text and "helpfulness: at most 5" in r.text
    assert not [n for n, _ in env.world.calls if n in ("create_score", "complete_item")]


def test_skip_and_flag_with_reason(env: Env) -> None:
    q, _, _ = _setup(env, items=2)
    c = env.client()
    sign_in(c, "rev@t.test")
    first = c.get(f"/queues/{q['id']}/review").headers["location"]
    token = csrf_of(c.get(first).text)
    assert c.post(f"{first}/skip", data={"csrf": token, "reason": "not english"}).status_code == 303
    second = c.get(f"/queues/{q['id']}/review").headers["location"]
    assert second != first
    assert c.post(f"{second}/flag", data={"csrf": token, "reason": "PII"}).status_code == 303
    calls = [(n, a[2]) for n, a in env.world.calls if n in ("skip_item", "flag_item")]
    assert calls == [("skip_item", "not english"), ("flag_item", "PII")]
    done = c.get(f"/queues/{q['id']}/review")
    assert done.status_code == 200 and "Nothing left for you" in done.text


def test_heartbeat_renews_the_lease_and_needs_csrf(env: Env) -> None:
    q, _, _ = _setup(env, items=1)
    c = env.client()
    token = sign_in(c, "rev@t.test")
    item_url = c.get(f"/queues/{q['id']}/review").headers["location"]
    c.get(item_url)
    assert c.post(f"{item_url}/heartbeat").status_code == 403
    r = c.post(f"{item_url}/heartbeat", headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert r.status_code == 200 and r.json()["ok"] and r.json()["expires_at"]


def test_go_back_and_edit_updates_instead_of_duplicating(env: Env) -> None:
    q, (correctness, _helpful), _ = _setup(env, items=2)
    c = env.client()
    token = sign_in(c, "rev@t.test")
    first = c.get(f"/queues/{q['id']}/review").headers["location"]
    c.get(first)
    c.post(f"{first}/complete", data={"csrf": token, f"score:{correctness['id']}": "wrong"})
    second = c.get(f"/queues/{q['id']}/review").headers["location"]
    page = c.get(second).text
    assert f'data-previous="{first}"' in page
    history = c.get(f"/queues/{q['id']}/history").text
    assert first in history
    edit = c.get(first)
    assert edit.status_code == 200 and "editing a completed item" in edit.text
    assert 'value="wrong" data-key="1" checked' in edit.text
    r = c.post(f"{first}/complete", data={"csrf": token, f"score:{correctness['id']}": "right"})
    # saving the edit goes back to the item this reviewer holds, not to the history
    assert r.status_code == 303 and r.headers["location"] == second
    scores = [s for s in env.world.scores.values() if s["config_id"] == correctness["id"]]
    assert len(scores) == 1 and scores[0]["value"] == "right"
    assert [n for n, _ in env.world.calls].count("complete_item") == 1


def test_blind_queue_hides_automated_scores(env: Env) -> None:
    q, _, _ = _setup(env, items=1, blind=True)
    c = env.client()
    sign_in(c, "rev@t.test")
    html = c.get(c.get(f"/queues/{q['id']}/review").headers["location"]).text
    assert "Blind review" in html and "judge" not in html


def test_queue_list_shows_progress(env: Env) -> None:
    q, (correctness, _), _ = _setup(env, items=2)
    c = env.client()
    token = sign_in(c, "rev@t.test")
    first = c.get(f"/queues/{q['id']}/review").headers["location"]
    c.post(f"{first}/complete", data={"csrf": token, f"score:{correctness['id']}": "right"})
    html = c.get("/queues").text
    assert "1 of 2 completed" in html and "1 done" in html and "<svg" in html


def test_a_session_item_shows_its_traces_and_scores_the_session(env: Env) -> None:
    w = env.world
    cfg = w.add_config("resolved", "BOOLEAN")
    q = w.add_queue("Sessions", [cfg])
    w.add_trace("s1-a", session_id="sess-1", input="first turn")
    w.add_trace("s1-b", session_id="sess-1", input="second turn")
    w.add_trace("other", session_id="sess-2", input="not this one")
    item = w.add_item(q["id"], "sess-1")
    item.update(object_type="SESSION", trace_id=None)
    c = env.client()
    token = sign_in(c, "rev@t.test")
    url = c.get(f"/queues/{q['id']}/review").headers["location"]
    html = c.get(url).text
    assert "first turn" in html and "second turn" in html and "not this one" not in html
    r = c.post(f"{url}/complete", data={"csrf": token, f"score:{cfg['id']}": "1"})
    assert r.status_code == 303
    [score] = w.scores.values()
    assert score["session_id"] == "sess-1" and "trace_id" not in score and score["value"] == 1.0


def test_reopening_the_queue_resumes_the_held_item(env: Env) -> None:
    q, _, _ = _setup(env, items=3)
    c = env.client()
    sign_in(c, "rev@t.test")
    first = c.get(f"/queues/{q['id']}/review").headers["location"]
    again = c.get(f"/queues/{q['id']}/review").headers["location"]
    assert again == first
    held = [i for i in env.world.items.values() if i.get("leases")]
    assert len(held) == 1


def test_skip_can_be_undone_and_the_end_page_counts_apart(env: Env) -> None:
    q, (correctness, _), _ = _setup(env, items=2)
    c = env.client()
    token = sign_in(c, "rev@t.test")
    first = c.get(f"/queues/{q['id']}/review").headers["location"]
    second = c.post(f"{first}/skip", data={"csrf": token, "reason": "unsure"}).headers["location"]
    assert second != first and second.startswith(f"/queues/{q['id']}/items/")
    html = c.get(second).text
    assert 'id="undo-skip"' in html and f'{first}/undo-skip' in html
    r = c.post(f"{first}/undo-skip", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == first
    # the item offered in its place was given back; the skipped one is held again
    assert not env.world.items[second.rsplit("/", 1)[1]].get("leases")
    c.get(first)
    c.post(f"{first}/complete", data={"csrf": token, f"score:{correctness['id']}": "right"})
    again = c.get(f"/queues/{q['id']}/review").headers["location"]
    c.post(f"{again}/skip", data={"csrf": token, "reason": "not english"})
    done = c.get(f"/queues/{q['id']}/review").text
    assert "Completed. Here is the next one" not in done and "Nothing left for you" in done
    assert "You reviewed <strong>1</strong> item, skipped <strong>1</strong>" in done
    assert "no active routing rules" in done and "Undo skip" in done
    history = c.get(f"/queues/{q['id']}/history").text
    assert "not english" in history and "Undo skip" in history and "UTC" in history
