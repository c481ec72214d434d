"""Sessions belong to one browser: signing in in one browser must not sign in another one that goes through the
same base URL (a proxy that keeps cookies would hand every visitor the last person's session)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tally_shared.testing.plugin import StackHandle

from .conftest import Watched, sign_in

pytestmark = pytest.mark.browser


def test_a_session_stays_in_its_browser(tally_stack: StackHandle, watched: Watched, browser: Any) -> None:
    sign_in(watched, tally_stack, tally_stack.admin_email, tally_stack.admin_password)
    assert "/login" not in watched.page.url
    other = browser.new_context()
    try:
        page = other.new_page()
        page.goto(tally_stack.console_url + "queues")
        assert "/login" in page.url, "a fresh browser was signed in as someone else"
    finally:
        other.close()
    # The same without a browser: a request with no cookie is never treated as signed in.
    r = httpx.get(tally_stack.console_url + "queues", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
