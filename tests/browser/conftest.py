"""Browser tests: Debian's Chromium driven by Playwright (no browser download), against the whole system started
by the ``tally_stack`` fixture (every service and the gateway as real processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle

CHROMIUM = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "reviewer password 1"

T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def _fresh_failure_shots() -> None:
    """A failure shot belongs to the run that failed."""
    for stale in SCREENSHOTS.glob("failed-*.png"):
        stale.unlink()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in this thread while it is
    # open, and the async tests that run after the browser tests need the thread's loop slot free.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page that records what would betray running script: dialogs, console errors, CSP violations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    def csp_violations(self) -> list[str]:
        """The console's own pages must live within their Content-Security-Policy."""
        return [e for e in self.console_errors if "Content Security Policy" in e or "Refused to" in e]

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def watched(browser: Any, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield Watched(page)
    finally:
        if request.node.stash.get(FAILED, False):
            shot(page, f"failed-{request.node.name}")
        context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def api(tally_stack: StackHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tally_stack.base_url, auth=tally_stack.auth, timeout=30) as client:
        yield client


def make_user(stack: StackHandle, email: str, role: str, password: str = PASSWORD) -> str:
    from tally_shared.db import make_engine
    from tally_shared.identity.store import IdentityStore

    async def go() -> str:
        engine = make_engine(stack.database_url, pool_size=1)
        try:
            store = IdentityStore(engine)
            user = await store.create_user(email, password, email.split("@")[0].title())
            await store.add_member(user.id, stack.project_id, role)
            return user.id
        finally:
            await engine.dispose()

    # Playwright's sync API keeps an event loop running in this thread: run the coroutine in another one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def sign_in(w: Watched, stack: StackHandle, email: str, password: str) -> None:
    page = w.page
    page.goto(stack.console_url + "login")
    if "/login" not in page.url:
        # Someone else's session reached this fresh browser (see test_sessions.py): leave it first.
        page.click("form[action='/logout'] button")
        page.wait_for_url("**/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)


def ingest(api: httpx.Client, events: list[dict[str, Any]]) -> None:
    r = api.post("/api/public/ingestion", json={"batch": events})
    assert r.status_code == 207, r.text
    assert not r.json()["errors"], r.json()["errors"]


def trace_event(trace_id: str, name: str, **body: Any) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now,
            "body": {"id": trace_id, "name": name, "timestamp": now, **body}}


def observation_event(kind: str, trace_id: str, obs_id: str, **body: Any) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {"id": str(uuid.uuid4()), "type": kind, "timestamp": now,
            "body": {"id": obs_id, "traceId": trace_id, "startTime": now, "endTime": now, **body}}


def create_config(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/score-configs", json=body)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def create_queue(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/queues", json=body)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def trace_visible(api: httpx.Client, trace_id: str) -> bool:
    return api.get(f"/api/v1/traces/{trace_id}").status_code == 200
