"""A reviewer completes items in Chromium with the keyboard only: how long from pressing Enter ("complete") until
the next item is on screen and ready for keys. Not a test: figures for this machine.

    .venv/bin/python bench/review_browser.py [--items 30] [--blind]

Starts the whole system as real processes (every service and the gateway, as `tally up` does) on a fresh database
of DATABASE_URL's server and an embedded broker, fills a queue with traces of realistic size (chat input, markdown
answer, a dozen observations), then drives Debian's Chromium through Playwright: digit keys pick the answers, Enter
completes. Prints p50/p95/max of "complete -> next item ready", and the CPU each service spent per item."""

from __future__ import annotations

import argparse
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from tally_cli.routes import DEFAULT_PORTS
from tally_cli.stack import Stack, StackConfig
from tally_shared import infra
from tally_shared.db import make_engine
from tally_shared.identity.store import IdentityStore

CHROMIUM = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "bench reviewer password"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


async def _people(url: str, project: str, reviewer: str) -> tuple[str, str]:
    engine = make_engine(url, pool_size=1)
    try:
        store = IdentityStore(engine)
        await store.create_project(project, project)
        user = await store.create_user(reviewer, PASSWORD, "Bench Reviewer")
        await store.add_member(user.id, project, "reviewer")
        return await store.create_api_key(project)
    finally:
        await engine.dispose()


def _events(run: str, n: int) -> list[dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    answer = ("Here is **what to do**:\n\n1. Open *Settings*\n2. Choose `Security`\n3. Reset.\n\n"
              "See [the help center](https://example.com/help) for more. " * 12)
    out: list[dict[str, Any]] = []
    for i in range(n):
        tid = f"rb-{run}-{i:03d}"
        out.append({"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now, "body": {
            "id": tid, "name": "support-chat", "timestamp": now, "tags": ["support"],
            "input": [{"role": "system", "content": "You are a support agent. " * 20},
                      {"role": "user", "content": f"How do I reset my password? (case {i})"}],
            "output": {"role": "assistant", "content": answer}, "metadata": {"locale": "en", "tier": "gold"}}})
        for j in range(12):
            out.append({"id": str(uuid.uuid4()), "type": "span-create" if j % 3 else "generation-create",
                        "timestamp": now, "body": {
                            "id": f"{tid}-o{j}", "traceId": tid, "name": f"step-{j}", "startTime": now,
                            "endTime": now, "parentObservationId": f"{tid}-o{j - 1}" if j else None,
                            "input": {"q": f"step {j} input " * 10}, "output": answer[:600]}})
    return out


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        t = p.cpu_times()
        total = t.user + t.system
        for child in p.children(recursive=True):
            try:
                ct = child.cpu_times()
                total += ct.user + ct.system
            except psutil.NoSuchProcess:
                pass
        out[name] = total
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--blind", action="store_true", help="a blind queue (projections asks queue-router per read)")
    args = ap.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    kafka_port = infra.free_port()
    tansu = infra.start_tansu(kafka_port, log_path=Path(f"/tmp/{name}-tansu.log"))
    url = infra.create_database(server, name)
    ports = {svc: infra.free_port() for svc in DEFAULT_PORTS}
    config = StackConfig(database_url=url, kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                         secret_key=secrets.token_urlsafe(32), ports=ports, log_dir=Path(f"/tmp/{name}-logs"),
                         extra_env={"TALLY_LOG_LEVEL": "warning"})
    stack = Stack(config)
    run = uuid.uuid4().hex[:6]
    n = args.items + 3  # a few more than measured: the first ones warm caches
    try:
        stack.prepare()
        stack.start(timeout=120)
        project = f"bench-{run}"
        reviewer = f"reviewer-{run}@tally.test"
        public, secret = infra.run_sync(_people(url, project, reviewer))
        api = httpx.Client(base_url=config.base_url, auth=(public, secret), timeout=30)
        cfg = api.post("/api/v1/score-configs", json={
            "name": "correctness", "data_type": "CATEGORICAL", "categories": [
                {"label": "wrong", "value": 0}, {"label": "partly", "value": 1}, {"label": "right", "value": 2}],
            "guidelines": "right: fully correct."}).raise_for_status().json()
        stars = api.post("/api/v1/score-configs", json={
            "name": "helpfulness", "data_type": "NUMERIC", "min_value": 1, "max_value": 5, "step": 1,
        }).raise_for_status().json()
        queue = api.post("/api/v1/queues", json={
            "name": f"bench {run}", "description": "Check each answer against the **help center**. " * 5,
            "blind": args.blind, "reviewers": [reviewer],
            "score_configs": [{"id": cfg["id"], "required": True}, {"id": stars["id"], "required": True}],
        }).raise_for_status().json()
        events = _events(run, n)
        for i in range(0, len(events), 200):
            r = api.post("/api/public/ingestion", json={"batch": events[i:i + 200]})
            assert r.status_code == 207 and not r.json()["errors"], r.text
        tids = [f"rb-{run}-{i:03d}" for i in range(n)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = api.get("/api/v1/traces", params={"limit": 500, "name": "support-chat"})
            if r.status_code == 200 and r.json().get("meta", {}).get("total", 0) >= n:
                break
            time.sleep(0.5)
        api.post(f"/api/v1/queues/{queue['id']}/items", json={"items": [{"object_id": t} for t in tids]}
                 ).raise_for_status()
        procs = {svc: psutil.Process(p.pid) for svc, p in stack.procs.items()}

        from playwright.sync_api import sync_playwright

        times: list[float] = []
        phases: list[dict[str, float]] = []
        in_page: list[float] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic"])
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            # In-page clocks (no Playwright round trips): when Enter went down, and when the next page said ready.
            page.add_init_script("""
                document.addEventListener('keydown', e => {
                    const now = performance.timeOrigin + performance.now();
                    if (e.key === 'Enter') sessionStorage.setItem('tEnter', String(now));
                }, true);
                new MutationObserver((_, obs) => {
                    if (document.documentElement && document.documentElement.hasAttribute('data-ready')) {
                        window.__readyAt = performance.timeOrigin + performance.now(); obs.disconnect();
                    }
                }).observe(document, {attributes: true, subtree: true});
            """)
            page.set_default_timeout(30_000)
            page.goto(config.base_url + "/login")
            page.fill("input[name=email]", reviewer)
            page.fill("input[name=password]", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_url(lambda u: "/login" not in u)
            page.goto(config.base_url + f"/queues/{queue['id']}/review")
            page.wait_for_selector("html[data-ready] #review")
            cpu0: dict[str, float] = {}
            for i in range(n - 1):
                if i == 3:
                    cpu0 = _cpu(procs)
                before = page.url
                page.keyboard.press("3")  # correctness: right (moves to the next field)
                page.keyboard.press("4")  # helpfulness: 4
                t0 = time.perf_counter()
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                page.wait_for_selector("html[data-ready] #review")
                elapsed = (time.perf_counter() - t0) * 1000
                assert page.url != before, "the same item came back"
                if i >= 3:
                    times.append(elapsed)
                    in_page.append(page.evaluate("() => window.__readyAt - Number(sessionStorage.getItem('tEnter'))"))
                    phases.append(page.evaluate("""() => {
                        const n = performance.getEntriesByType('navigation')[0];
                        return {complete_post: n.redirectEnd - n.redirectStart,
                                next_page_server: n.responseStart - n.requestStart,
                                download: n.responseEnd - n.responseStart,
                                parse_and_script: n.domContentLoadedEventEnd - n.responseEnd,
                                navigation_total: n.domContentLoadedEventEnd,
                                bytes: n.transferSize};
                    }"""))
            cpu1 = _cpu(procs)
            browser.close()
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; blind queue: {args.blind}")
        print("navigation_total: from the browser starting the POST to the next page's DOMContentLoaded; the "
              "rest of the wall time is the key press reaching the form and Playwright seeing the page ready")
        print(f"complete -> next item ready (in the page: Enter down to the next page ready), {len(in_page)} items: "
              f"p50 {pct(in_page, .5):.0f} ms, p95 {pct(in_page, .95):.0f} ms, max {max(in_page):.0f} ms")
        print(f"the same seen by the driver (plus Playwright round trips): p50 {pct(times, .5):.0f} ms, "
              f"p95 {pct(times, .95):.0f} ms, max {max(times):.0f} ms")
        print("phases, median: " + ", ".join(
            f"{k} {pct([p[k] for p in phases], .5):.0f}" for k in phases[0]))
        print("service CPU per item (ms): " + ", ".join(
            f"{svc} {(cpu1[svc] - cpu0[svc]) * 1000 / len(times):.1f}" for svc in sorted(cpu1)))
        return 0
    finally:
        stack.stop(drain=False)
        infra.stop_process(tansu)
        infra.drop_database(server, name)


if __name__ == "__main__":
    raise SystemExit(main())
