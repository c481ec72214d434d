"""Scoring without a queue: annotate a trace from its page with any config, and send traces picked in the traces
table to a queue."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle

from .conftest import Watched, create_config, create_queue, ingest, shot, sign_in, trace_event, trace_visible, wait_for

pytestmark = pytest.mark.browser


def test_annotate_a_trace_and_queue_traces_from_the_table(tally_stack: StackHandle, api: httpx.Client,
                                                          watched: Watched) -> None:
    run = uuid.uuid4().hex[:6]
    name = f"direct-{run}"
    ids = [f"direct-{run}-{i}" for i in range(3)]
    ingest(api, [trace_event(t, name, input=f"question {i}", output=f"answer {i}", tags=["direct", run])
                 for i, t in enumerate(ids)])
    wait_for(lambda: all(trace_visible(api, t) for t in ids), what="traces in projections")
    config = create_config(api, name=f"grounded-{run}", data_type="BOOLEAN", description="Backed by the docs?")
    queue = create_queue(api, name=f"Hand-picked {run}", score_configs=[{"id": config["id"], "required": True}])
    page = watched.page
    base = tally_stack.console_url
    sign_in(watched, tally_stack, tally_stack.admin_email, tally_stack.admin_password)

    # Annotate from the trace page.
    page.goto(base + f"traces/{ids[0]}")
    page.click(f"a.annotate-button:has-text('grounded-{run}')")
    page.wait_for_selector("#annotate-form")
    page.check(f"input[name='score:{config['id']}'][value='1']")
    page.fill("#annotate-form textarea[name=comment]", "checked against the FAQ")
    shot(page, "07-annotate")
    page.click("#save-annotation")
    page.wait_for_selector(".flash.ok")

    def recorded() -> list[dict[str, Any]] | None:
        data = api.get("/api/v1/scores", params={"trace_id": ids[0], "config_id": config["id"]}).json()["data"]
        return list(data) or None

    [score] = wait_for(recorded, what="the annotation recorded by scoring")
    assert score["value"] == 1 and score["source"] == "ANNOTATION" and score["comment"] == "checked against the FAQ"

    # Filter the traces table, select two rows, add them to the queue.
    page.goto(base + f"traces?name={name}&tags={run}")
    page.wait_for_selector("html[data-ready] #traces-table")
    assert page.locator(".trace-row").count() == 3
    page.check(f".row-select[value='{ids[1]}']")
    page.check(f".row-select[value='{ids[2]}']")
    assert page.inner_text("#selected-count") == "2"
    page.select_option("#queue-select", queue["id"])
    page.click("#add-selected")
    assert "Added 2 of 2" in page.inner_text(".flash.ok")
    items = api.get(f"/api/v1/queues/{queue['id']}/items").json()["data"]
    assert sorted(i["object_id"] for i in items) == sorted(ids[1:])
    assert not watched.dialogs
    assert not watched.csp_violations(), watched.csp_violations()
