"""The review workflow end to end in Chromium: blind review enforced on the trace page, nothing pre-selected, Tab
and the highlighted field agree, keys reach the skip reason, a skip undone with one key, an edit returning to the
held item, the end-of-queue page, the history with trace, input, scores, reason and UTC times, and a rule's
decision log. Screenshots of history, end of queue and decision log go to test-artifacts."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle

from .conftest import (
    PASSWORD,
    Watched,
    create_config,
    create_queue,
    ingest,
    make_user,
    shot,
    sign_in,
    trace_event,
    trace_visible,
    wait_for,
)

pytestmark = pytest.mark.browser


def _item_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def test_blind_review_history_undo_end_page_and_decision_log(tally_stack: StackHandle, api: httpx.Client,
                                                             watched: Watched) -> None:
    run = uuid.uuid4().hex[:6]
    reviewer_email, lead_email = f"blind-{run}@tally.test", f"lead-{run}@tally.test"
    make_user(tally_stack, reviewer_email, "reviewer")
    make_user(tally_stack, lead_email, "member")
    verdict = create_config(api, name=f"verdict-{run}", data_type="CATEGORICAL", categories=[
        {"label": "bad", "value": 0}, {"label": "ok", "value": 1}, {"label": "good", "value": 2}])
    stars = create_config(api, name=f"stars-{run}", data_type="NUMERIC", min_value=1, max_value=5, step=1)
    # Named by email: stored as the member's user id, and the console serves them by it.
    queue = create_queue(api, name=f"Blind {run}", blind=True, reviewers=[reviewer_email],
                         score_configs=[{"id": verdict["id"], "required": True},
                                        {"id": stars["id"], "required": False}])
    assert queue["reviewers"] and "@" not in queue["reviewers"][0]
    name = f"blind-chat-{run}"
    rule = api.post(f"/api/v1/queues/{queue['id']}/rules", json={
        "name": "by name", "daily_cap": 1,
        "filter": {"groups": [{"conditions": [{"field": "name", "op": "eq", "value": name}]}]}})
    assert rule.status_code == 201, rule.text
    tids = [f"bl-{run}-{i}" for i in range(3)]
    ingest(api, [trace_event(t, name, input={"question": f"Where is my parcel number {i}?"},
                             output={"answer": "On its way."}) for i, t in enumerate(tids)])
    wait_for(lambda: all(trace_visible(api, t) for t in tids), what="traces in projections")
    for t in tids:
        r = api.post("/api/public/scores", json={"traceId": t, "name": "judge", "value": 0.1,
                                                 "comment": f"JUDGE-SECRET-{run}"})
        assert r.status_code == 200, r.text
    wait_for(lambda: all(api.get(f"/api/v1/traces/{t}").json()["scores"] for t in tids), what="judge scores")
    wait_for(lambda: api.get(f"/api/v1/queues/{queue['id']}/items").json()["data"], what="the rule's item")
    api.post(f"/api/v1/queues/{queue['id']}/items", json={"items": [{"object_id": t} for t in tids]})

    page = watched.page
    sign_in(watched, tally_stack, reviewer_email, PASSWORD)
    page.goto(tally_stack.console_url + f"queues/{queue['id']}/review")
    page.wait_for_selector("html[data-ready] #review")
    first = page.url
    held_trace = page.inner_text("#trace")
    assert f"JUDGE-SECRET-{run}" not in page.content()
    # 13: nothing is pre-selected, so an unanswered field looks unanswered
    assert page.locator("#score-form input[type=radio]:checked").count() == 0
    # 8: the trace page of the held item does not show the judge's score either (the server hides it)
    trace_id = next(t for t in tids if t in held_trace)
    page.goto(tally_stack.console_url + f"traces/{trace_id}")
    assert "Where is my parcel" in page.content() and f"JUDGE-SECRET-{run}" not in page.content()
    page.goto(first)
    page.wait_for_selector("html[data-ready] #review")

    # 11: Tab moves the focus and the highlight together; "r" reaches the skip reason box
    page.locator("#score-form fieldset.field").first.locator("input[type=radio]").first.focus()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.closest('fieldset.field')?.dataset.index")
    assert focused == "1" and page.locator("fieldset.field.active").get_attribute("data-index") == "1"
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "skip-reason"
    page.keyboard.type("need a second look")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("html[data-ready] #undo-skip")
    second = page.url
    assert second != first
    # 12: "u" takes the skip back: the skipped item is the reviewer's again
    with page.expect_navigation():
        page.keyboard.press("u")
    page.wait_for_selector("html[data-ready] #review")
    assert page.url == first
    page.keyboard.press("3")
    page.keyboard.press("4")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("html[data-ready] #review")
    held = page.url
    assert held != first
    # 9: go back, change the answer, save: back on the item still held, not on History
    with page.expect_navigation():
        page.keyboard.press("b")
    page.wait_for_selector("#editing")
    page.keyboard.press("2")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("html[data-ready] #review")
    assert page.url == held and page.locator("#editing").count() == 0
    page.keyboard.press("1")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("html[data-ready] #review")
    page.keyboard.press("r")
    page.keyboard.type("not my language")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # 10: the end page counts the skip apart and does not claim a next item
    page.wait_for_selector("#queue-done")
    done = page.inner_text("main")
    assert "Here is the next one" not in done and "Nothing left for you" in done
    assert "You reviewed 2 items, skipped 1" in page.inner_text("#done-counts")
    assert "routing rules (1)" in done and page.locator(".undo-skip").count() == 1
    shot(page, "10-end-of-queue")

    # 9, 13: the history names the trace, quotes its input, shows the scores given, the reason, and UTC times
    page.goto(tally_stack.console_url + f"queues/{queue['id']}/history")
    history = page.inner_text("#history")
    assert name in history and "Where is my parcel" in history and "not my language" in history
    assert f"verdict-{run}: ok" in history and "UTC" in history
    assert f"JUDGE-SECRET-{run}" not in page.content()
    shot(page, "09-history")

    # a lead sees the judge's scores, and the rule's decision log: one added, the others over the cap
    sign_in(watched, tally_stack, lead_email, PASSWORD)
    page.goto(tally_stack.console_url + f"traces/{trace_id}")
    assert f"JUDGE-SECRET-{run}" in page.content()
    page.goto(tally_stack.console_url + f"setup/queues/{queue['id']}")
    page.click(".rule-log-link")
    page.wait_for_selector("#decisions")
    log = page.inner_text("#decisions")
    assert "added" in log and "cap reached" in log
    shot(page, "07-decision-log")
