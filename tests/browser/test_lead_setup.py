"""A lead creates a score config, a queue and a routing rule in the console, sends traces through ingest with
the project's keys, and watches them arrive in the queue."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle

from .conftest import Watched, ingest, shot, sign_in, trace_event, trace_visible, wait_for

pytestmark = pytest.mark.browser


def test_lead_sets_up_a_queue_and_traces_arrive(tally_stack: StackHandle, api: httpx.Client,
                                                watched: Watched) -> None:
    run = uuid.uuid4().hex[:6]
    page = watched.page
    base = tally_stack.console_url
    sign_in(watched, tally_stack, tally_stack.admin_email, tally_stack.admin_password)

    # A score config.
    page.goto(base + "setup/configs/new")
    page.fill("#config-form input[name=name]", f"tone-{run}")
    page.select_option("#data-type", "CATEGORICAL")
    page.fill("#config-form textarea[name=categories]", "rude=0\nneutral=1\nfriendly=2")
    page.fill("#config-form textarea[name=guidelines]", "friendly: warm and polite; rude: any insult.")
    shot(page, "10-config-form")
    page.click("#save-config")
    page.wait_for_url("**/setup/configs")
    assert f"tone-{run}" in page.inner_text("#configs")
    shot(page, "11-configs")

    # A queue with that config, two reviewers per item, a 5 minute lease.
    page.goto(base + "setup/queues/new")
    page.fill("#queue-form input[name=name]", f"Tone review {run}")
    page.fill("#queue-form textarea[name=description]", "Score the tone of the assistant's reply.")
    row = page.locator(".config-pick", has_text=f"tone-{run}")
    row.locator("input[name=config]").check()
    row.locator("input[name=required_config]").check()
    page.fill("#queue-form input[name=reviewers_per_item]", "2")
    page.fill("#queue-form input[name=lease_minutes]", "5")
    page.click("#save-queue")
    page.wait_for_selector("#rule-form")
    queue_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # Some earlier matching traffic, so the preview has something to count.
    trace_name = f"tone-check-{run}"
    early = [f"early-{run}-{i}" for i in range(2)]
    ingest(api, [trace_event(t, trace_name, input="hi", output="hello") for t in early])
    wait_for(lambda: all(trace_visible(api, t) for t in early), what="earlier traces in projections")

    # A rule: trace name equals the run's name. Preview first, then add it.
    page.fill("#rule-form input[name=rule_name]", "tone checks")
    page.select_option("select[name=cond-0-field]", "name")
    page.select_option("select[name=cond-0-op]", "eq")
    page.fill("input[name=cond-0-value]", trace_name)
    page.click("#preview-rule")
    page.wait_for_selector("#rule-preview")
    assert page.inner_text("#rule-preview strong") == "2"
    shot(page, "12-queue-setup-preview")
    page.click("#create-rule")
    page.wait_for_selector("#rules-table")
    assert "tone checks" in page.inner_text("#rules-table")
    shot(page, "13-queue-rules")

    # Live traffic: three matching traces and one that does not match.
    live = [f"live-{run}-{i}" for i in range(3)]
    ingest(api, [trace_event(t, trace_name, input={"q": "thanks!"}, output={"a": "You're welcome."})
                 for t in live] + [trace_event(f"other-{run}", "something-else")])

    def arrived() -> str | None:
        page.goto(base + "queues")
        text = page.locator(f".queue-row[data-queue='{queue_id}']").inner_text()
        return text if "of 3 completed" in text else None

    wait_for(arrived, timeout=45, what="the three live traces routed into the queue")
    shot(page, "14-queues-after-routing")
    page.locator(f".queue-row[data-queue='{queue_id}'] a.button.primary").click()
    page.wait_for_selector("html[data-ready] #review")
    assert trace_name in page.inner_text("#trace")
    assert "Score the tone" in page.inner_text(".instructions")
    assert not watched.dialogs
    assert not watched.csp_violations(), watched.csp_violations()
