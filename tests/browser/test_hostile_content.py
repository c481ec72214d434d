"""Hostile trace content: script tags, event-handler attributes, javascript: links, HTML in markdown. The browser
must show it as text and run none of it: a window flag that any of it would set stays unset, no dialog opens."""

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
    observation_event,
    shot,
    sign_in,
    trace_event,
    trace_visible,
    wait_for,
)

PAYLOADS = [
    "<script>window.__pwned = 'script'; alert('script')</script>",
    "<img src=x onerror=\"window.__pwned='img'; alert('img')\">",
    "<svg onload=\"window.__pwned='svg'\"><circle r=5 /></svg>",
    "<a href=\"javascript:window.__pwned='link';alert('link')\">click me</a>",
    "[markdown link](javascript:window.__pwned='md';alert('md'))",
    "**bold** and `code`\n\n<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
    "<body onload=\"window.__pwned='body'\"><details open ontoggle=\"window.__pwned='toggle'\">x</details>",
    "\"><script>window.__pwned='attr-break'</script><input autofocus onfocus=\"window.__pwned='focus'\">",
    "<style>body{display:none}</style><meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<form action=\"javascript:alert('form')\"><button>go</button></form>",
]
HOSTILE = "\n\n".join(PAYLOADS) + "\n\n" + ("long filler line to force folding\n" * 80)

pytestmark = pytest.mark.browser


def test_hostile_trace_content_runs_nothing(tally_stack: StackHandle, api: httpx.Client, watched: Watched) -> None:
    run = uuid.uuid4().hex[:6]
    tid = f"hostile-{run}"
    ingest(api, [
        trace_event(tid, f"<script>window.__pwned='name'</script>{run}", input=HOSTILE,
                    output={"answer": HOSTILE, "<img src=x onerror=alert(1)>": "key"},
                    tags=["<b onmouseover=alert(1)>tag</b>"],
                    metadata={"html": "<script>window.__pwned='meta'</script>"}),
        observation_event("span-create", tid, f"{tid}-span", name="<img src=x onerror=alert('obs')>",
                          input=[{"role": "user", "content": HOSTILE}],
                          output={"role": "assistant", "content": "[x](javascript:alert('chat'))"},
                          statusMessage="<script>alert('status')</script>", level="ERROR"),
    ])
    wait_for(lambda: trace_visible(api, tid), what="the hostile trace in projections")
    config = create_config(api, name=f"safe-{run}", data_type="BOOLEAN",
                           description="<script>window.__pwned='guidelines'</script>")
    queue = create_queue(api, name=f"<img src=x onerror=alert('queue')> {run}",
                         description="<script>window.__pwned='instructions'</script>",
                         score_configs=[{"id": config["id"], "required": True}])
    r = api.post(f"/api/v1/queues/{queue['id']}/items",
                 json={"items": [{"object_type": "TRACE", "object_id": tid, "trace_id": tid}]})
    assert r.status_code in (200, 201), r.text
    email = f"hostile-reviewer-{run}@tally.test"
    make_user(tally_stack, email, "reviewer")
    page = watched.page
    sign_in(watched, tally_stack, email, PASSWORD)

    def check(where: str) -> None:
        page.wait_for_selector("html[data-ready]")
        # Open every fold and every "view as markdown" so the sanitised markdown is in the page, then click links.
        while page.locator("details:not([open]) > summary").count():
            page.locator("details:not([open]) > summary").first.click()
        for link in page.locator("#trace a, .markdown a").all():
            link.click(modifiers=["Alt"], no_wait_after=True, force=True)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None, f"{where}: script from content ran"
        assert not watched.dialogs, f"{where}: a dialog opened: {watched.dialogs}"
        assert not watched.csp_violations(), watched.csp_violations()
        # Nothing of the content became markup: one script (the console's own), no handlers, no js: links.
        assert page.evaluate("document.scripts.length") == 1
        assert page.evaluate(
            "[...document.querySelectorAll('script')].every(s => s.src.endsWith('/static/console.js'))")
        assert page.locator("[onerror], [onload], [onclick], [onfocus], [ontoggle], [onmouseover]").count() == 0
        assert page.locator("a[href^='javascript:' i], form[action^='javascript:' i]").count() == 0
        assert page.locator("iframe, embed, object").count() == 0
        # And the text is there, readable.
        assert "<script>window.__pwned = 'script'" in page.inner_text("body")

    page.goto(tally_stack.console_url + f"traces/{tid}")
    check("trace page")
    shot(page, "20-hostile-trace")

    page.goto(tally_stack.console_url + "queues")
    page.wait_for_selector("html[data-ready]")
    assert "<img src=x onerror=alert('queue')>" in page.inner_text("body")
    page.locator(f".queue-row[data-queue='{queue['id']}'] a.button.primary").click()
    page.wait_for_selector("html[data-ready] #review")
    check("review screen")
    shot(page, "21-hostile-review")

    page.goto(tally_stack.console_url + "traces")
    page.wait_for_selector("html[data-ready] #traces-table")
    assert page.evaluate("window.__pwned") is None and not watched.dialogs
    csp = page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp
