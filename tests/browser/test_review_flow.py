"""A reviewer signs in, works through a queue with the keyboard (number keys, arrows, Enter, S), sees the lease
count down, goes back to a completed item and changes a score. Screenshots of the main pages are saved."""

from __future__ import annotations

import re
import uuid
from typing import Any

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
    observation_event,
    shot,
    sign_in,
    trace_event,
    trace_visible,
    wait_for,
)

pytestmark = pytest.mark.browser


def _my_scores(api: httpx.Client, queue_id: str, user_id: str) -> list[dict[str, Any]]:
    r = api.get("/api/v1/scores", params={"queue_id": queue_id, "author_user_id": user_id, "limit": 100})
    r.raise_for_status()
    return list(r.json()["data"])


def test_reviewer_works_through_a_queue_with_the_keyboard(tally_stack: StackHandle, api: httpx.Client,
                                                          watched: Watched) -> None:
    run = uuid.uuid4().hex[:6]
    correctness = create_config(api, name=f"correctness-{run}", data_type="CATEGORICAL", categories=[
        {"label": "wrong", "value": 0}, {"label": "partly right", "value": 1}, {"label": "right", "value": 2}],
        guidelines="right: fully correct. partly right: correct but incomplete. wrong: anything false.")
    helpful = create_config(api, name=f"helpfulness-{run}", data_type="NUMERIC", min_value=1, max_value=5, step=1,
                            description="1 = no help, 5 = the customer can act on it straight away")
    queue = create_queue(api, name=f"Support review {run}",
                         description="Check each answer against the help center before scoring.",
                         score_configs=[{"id": correctness["id"], "required": True},
                                        {"id": helpful["id"], "required": True}])
    trace_ids = [f"kb-{run}-{i}" for i in range(3)]
    events = []
    for i, tid in enumerate(trace_ids):
        events.append(trace_event(tid, f"support-chat-{run}", input={"question": f"How do I reset password #{i}?"},
                                  output={"answer": "Settings > Security > Reset password."},
                                  tags=["support"], metadata={"locale": "en"}))
        events.append(observation_event("generation-create", tid, f"{tid}-llm", name="answer", model="gpt-4o-mini",
                                        input=[{"role": "user", "content": "How do I reset my password?"}],
                                        output={"role": "assistant", "content": "Go to Settings."},
                                        usageDetails={"input": 120, "output": 30, "total": 150},
                                        costDetails={"total": 0.00012}))
    ingest(api, events)
    wait_for(lambda: all(trace_visible(api, t) for t in trace_ids), what="traces in projections")
    r = api.post(f"/api/v1/queues/{queue['id']}/items",
                 json={"items": [{"object_type": "TRACE", "object_id": t, "trace_id": t} for t in trace_ids]})
    assert r.status_code in (200, 201), r.text

    email = f"reviewer-{run}@tally.test"
    user_id = make_user(tally_stack, email, "reviewer")
    page = watched.page
    sign_in(watched, tally_stack, email, PASSWORD)

    page.goto(tally_stack.console_url + "queues")
    row = page.locator(f".queue-row[data-queue='{queue['id']}']")
    assert "0 of 3 completed" in row.inner_text()
    shot(page, "01-queues")
    row.locator("a.button.primary").click()
    page.wait_for_selector("html[data-ready] #review")
    first_url = page.url
    assert "Check each answer against the help center" in page.inner_text(".instructions")
    assert "support-chat" in page.inner_text("#trace")
    # The lease counts down and is renewed by the page's heartbeat.
    assert re.search(r"\d+:\d\d left", page.inner_text("#lease-left"))
    # The heartbeat the page sends renews the lease at queue-router (same call, made here without waiting a minute).
    beat = page.evaluate("""async () => {
        const review = document.getElementById('review');
        const r = await fetch(review.dataset.heartbeat, {method: 'POST', headers: {
            'X-CSRF-Token': document.body.dataset.csrf, 'Accept': 'application/json'}});
        return [r.status, await r.json(), review.dataset.leaseExpires];
    }""")
    assert beat[0] == 200 and beat[1]["ok"], beat
    assert beat[1]["expires_at"] >= beat[2]
    page.keyboard.press("?")
    assert page.is_visible("#shortcuts")
    shot(page, "03-shortcuts")
    page.keyboard.press("Escape")
    assert not page.is_visible("#shortcuts")
    shot(page, "02-review")

    # Item 1: "3" picks "right" and moves on to helpfulness, "4" rates it, Enter completes.
    page.keyboard.press("3")
    page.keyboard.press("4")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("html[data-ready] #review")
    second_url = page.url
    assert second_url != first_url
    assert page.locator(".flash.ok").first.inner_text().startswith("Completed")

    # Item 2: skip with S.
    with page.expect_navigation():
        page.keyboard.press("s")
    page.wait_for_selector("html[data-ready] #review")
    third_url = page.url
    assert third_url not in (first_url, second_url)

    # Item 3: arrows. "1" picks wrong and jumps to helpfulness; up goes back; right moves wrong -> partly right.
    page.keyboard.press("1")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("5")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("#queue-done")

    def four_scores() -> list[dict[str, Any]] | None:
        s = _my_scores(api, queue["id"], user_id)
        return s if len(s) == 4 else None

    scores = wait_for(four_scores, what="four scores by the reviewer")
    by_item: dict[str, dict[str, Any]] = {}
    for s in scores:
        by_item.setdefault(s["queue_item_id"], {})[s["name"]] = s
    first_item = first_url.rstrip("/").rsplit("/", 1)[1]
    third_item = third_url.rstrip("/").rsplit("/", 1)[1]
    assert by_item[first_item][correctness["name"]]["string_value"] == "right"
    assert by_item[first_item][helpful["name"]]["value"] == 4
    assert by_item[third_item][correctness["name"]]["string_value"] == "partly right"
    assert by_item[third_item][helpful["name"]]["value"] == 5
    assert all(s["source"] == "ANNOTATION" and s["author_user_id"] == user_id for s in scores)

    # Go back to the first item from the history and change its correctness to "wrong".
    page.goto(tally_stack.console_url + f"queues/{queue['id']}/history")
    shot(page, "04-history")
    page.click(f"a[href$='/items/{first_item}']")
    page.wait_for_selector("html[data-ready] #editing")
    assert page.is_checked(f"input[name='score:{correctness['id']}'][value='right']")
    page.keyboard.press("1")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Your scores were updated" in page.inner_text(".flash.ok")

    def changed() -> list[dict[str, Any]] | None:
        s = [x for x in _my_scores(api, queue["id"], user_id) if x["queue_item_id"] == first_item]
        return s if any(x["string_value"] == "wrong" for x in s) else None

    edited = wait_for(changed, what="the edited score")
    assert len([x for x in edited if x["name"] == correctness["name"]]) == 1  # changed, not duplicated

    def progress_text() -> str | None:
        page.goto(tally_stack.console_url + "queues")
        text = page.locator(f".queue-row[data-queue='{queue['id']}']").inner_text()
        return text if "2 of 3 completed" in text else None

    wait_for(progress_text, what="queue progress after two completions")

    # The other main pages, for the record.
    page.goto(tally_stack.console_url + "traces")
    page.wait_for_selector("#traces-table")
    shot(page, "05-traces")
    page.goto(tally_stack.console_url + f"traces/{trace_ids[0]}")
    page.wait_for_selector("#trace")
    page.locator("#observations details.obs summary").first.click()
    shot(page, "06-trace")
    assert not watched.dialogs
    assert not watched.csp_violations(), watched.csp_violations()
