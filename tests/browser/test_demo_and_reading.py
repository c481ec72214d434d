"""With `tally up`'s demo data loaded, someone who has never seen Tally signs in, finds a queue and reviews it with
the keyboard; a second reviewer scores the same items; the reading pages (dashboards, experiments, agreement,
calibration) then show charts of real figures. Screenshots of each page are saved."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tally_cli.demo import load_demo
from tally_shared.testing.plugin import StackHandle

from .conftest import PASSWORD, Watched, create_config, ingest, make_user, shot, sign_in, trace_event, wait_for

pytestmark = pytest.mark.browser

AGREEMENT_QUEUE = "Agreement sample: support-chat"


def _queue_id(api: httpx.Client, name: str) -> str:
    queues = api.get("/api/v1/queues", params={"limit": 500}).json()["data"]
    return str(next(q["id"] for q in queues if q["name"] == name))


def _items(api: httpx.Client, queue_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v1/queues/{queue_id}/items", params={"limit": 500}).json()["data"])


def _experiments(api: httpx.Client, run: str) -> tuple[str, str]:
    """Two experiment runs over the same four dataset items, with automated and human scores."""
    quality = create_config(api, name=f"quality-{run}", data_type="NUMERIC", min_value=0, max_value=1)
    runs = (f"prompt-v1-{run}", f"prompt-v2-{run}")
    events, scores = [], []
    for r, name in enumerate(runs):
        for i in range(4):
            tid = f"exp-{run}-{r}-{i}"
            events.append(trace_event(tid, "support-chat-eval", input=f"question {i}", output=f"answer {r}",
                                      dataset_name="support-faq", dataset_run_name=name,
                                      dataset_item_id=f"item-{i}"))
            human = 0.5 + 0.1 * i + 0.2 * r
            scores.append({"name": quality["name"], "config_id": quality["id"], "trace_id": tid,
                           "value": min(1.0, human), "source": "ANNOTATION", "author_user_id": "expert-1"})
            scores.append({"name": f"judge-quality-{run}", "data_type": "NUMERIC", "trace_id": tid,
                           "value": min(1.0, human + 0.05), "source": "EVAL", "evaluator_name": "gpt-judge"})
    ingest(api, events)
    for s in scores:
        r = api.post("/api/v1/scores", json=s)
        assert r.status_code in (200, 201), r.text
    return runs


def _review_two(watched: Watched, base: str, queue_id: str) -> None:
    page = watched.page
    page.goto(base + "queues")
    page.locator(f".queue-row[data-queue='{queue_id}'] a.button.primary").click()
    for n in range(2):
        page.wait_for_selector("html[data-ready] #review")
        # correctness: "3" = right on the first item, "1" = wrong on the second; helpfulness 4 / 2.
        page.keyboard.press("3" if n == 0 else "1")
        page.keyboard.press("4" if n == 0 else "2")
        with page.expect_navigation():
            page.keyboard.press("Enter")


def test_new_user_reviews_the_demo_and_reads_the_results(tally_stack: StackHandle, api: httpx.Client,
                                                        watched: Watched, browser: Any) -> None:
    run = uuid.uuid4().hex[:6]
    load_demo(tally_stack.base_url, tally_stack.public_key, tally_stack.secret_key)
    runs = _experiments(api, run)
    agreement_queue = _queue_id(api, AGREEMENT_QUEUE)
    wait_for(lambda: len(_items(api, agreement_queue)) >= 2, timeout=60, what="demo traces routed by the rules")

    base = tally_stack.console_url
    page = watched.page
    page.goto(base)
    assert "/login" in page.url
    shot(page, "00-sign-in")
    sign_in(watched, tally_stack, tally_stack.admin_email, tally_stack.admin_password)
    page.goto(base + "queues")
    assert AGREEMENT_QUEUE in page.inner_text("table.queues")
    _review_two(watched, base, agreement_queue)

    # A second person reviews the same items (two reviewers per item).
    email = f"second-{run}@tally.test"
    make_user(tally_stack, email, "reviewer")
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        second = Watched(context.new_page())
        second.page.set_default_timeout(15_000)
        sign_in(second, tally_stack, email, PASSWORD)
        _review_two(second, base, agreement_queue)
        assert not second.dialogs
    finally:
        context.close()

    def agreement_shown() -> str | None:
        page.goto(base + f"agreement?queue_id={agreement_queue}")
        text = page.inner_text("#agreement-summary")
        return None if text.lstrip().startswith("0") or "\n0\nitems scored by 2+" in text else text

    wait_for(agreement_shown, timeout=45, what="agreement figures for the doubly reviewed items")
    assert page.locator("#disputed tr").count() >= 1
    shot(page, "33-agreement")

    def dashboard_cards() -> int | None:
        page.goto(base + "dashboards")
        return page.locator(".dash-card").count() or None

    wait_for(dashboard_cards, timeout=30, what="dashboard cards")
    assert page.locator(".dash-card svg.chart").count() >= 2
    shot(page, "30-dashboards")

    page.goto(base + "experiments?" + "&".join(f"run={r}" for r in runs))
    page.wait_for_selector("#experiment-items")
    assert runs[0] in page.inner_text("#win-rate") and "win rate" in page.inner_text("#win-rate")
    shot(page, "31-experiments")

    quality_id = api.get("/api/v1/score-configs", params={"limit": 100}).json()["data"]
    cfg = next(c["id"] for c in quality_id if c["name"] == f"quality-{run}")
    page.goto(base + f"calibration?config_id={cfg}&evaluator=judge-quality-{run}")
    page.wait_for_selector("#calibration-summary")
    assert "8" in page.inner_text("#calibration-summary")
    shot(page, "32-calibration")

    page.goto(base + "setup/queues")
    shot(page, "34-setup-queues")
    page.goto(base + f"setup/queues/{agreement_queue}")
    shot(page, "35-queue-settings")
    assert not watched.dialogs
    assert not watched.csp_violations(), watched.csp_violations()
