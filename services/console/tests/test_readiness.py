"""The console is not ready while its API base URL does not reach the services: every signed-in page would fail."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from console.adapters.api import PROBE_PATHS, HttpApiFactory
from console.config import Settings
from console.entrypoints.app import create_app
from console.testing.fakes import FakeIdentity
from console.testing.pages import make_env
from tally_shared import infra

SECRET = "s" * 40


def _service_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "authentication required"}})


async def test_the_services_behind_the_base_url_pass_the_check() -> None:
    factory = HttpApiFactory("http://gateway", SECRET, transport=httpx.MockTransport(_service_answer))
    await factory.check_reachable()
    await factory.aclose()


async def test_a_base_url_pointing_at_the_console_itself_fails_the_check() -> None:
    console = make_env().app
    factory = HttpApiFactory("http://console", SECRET, transport=httpx.ASGITransport(console))  # type: ignore[arg-type]
    with pytest.raises(ConnectionError, match="console itself"):
        await factory.check_reachable()
    await factory.aclose()


async def test_a_gateway_that_is_down_fails_the_check() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"code": "upstream_unavailable", "message": "down"}})

    factory = HttpApiFactory("http://gateway", SECRET, transport=httpx.MockTransport(down))
    with pytest.raises(ConnectionError, match=PROBE_PATHS[0]):
        await factory.check_reachable()
    await factory.aclose()


def test_readiness_fails_when_nothing_answers_at_the_api_url() -> None:
    app = create_app(Settings(secret_key=SECRET, api_url=f"http://127.0.0.1:{infra.free_port()}"),
                     identity=FakeIdentity())
    with TestClient(app) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["api"].startswith("failed")
