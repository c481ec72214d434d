"""Helpers for the console's page tests: an app wired to in-memory fakes, and signing in through the form."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.testclient import TestClient

from console.config import Settings
from console.entrypoints.app import create_app
from console.testing.fakes import FakeApiFactory, FakeIdentity, World

PASSWORD = "pw-for-tests-1"


@dataclass
class Env:
    app: object
    identity: FakeIdentity
    factory: FakeApiFactory
    world: World
    project: str

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://console.test", follow_redirects=False)  # type: ignore[arg-type]


def make_env() -> Env:
    identity = FakeIdentity()
    factory = FakeApiFactory()
    project = "proj-a"
    identity.add("lead@t.test", PASSWORD, project, "admin", "Lead")
    identity.add("rev@t.test", PASSWORD, project, "reviewer", "Rev")
    identity.add("view@t.test", PASSWORD, project, "viewer", "Viewer")
    settings = Settings(secret_key="test-secret-" + "s" * 32, demo_hint="Sign in as lead@t.test / demo")
    app = create_app(settings, api_factory=factory, identity=identity)
    return Env(app, identity, factory, factory.world(project), project)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "page has no CSRF field"
    return m.group(1)


def sign_in(client: TestClient, email: str) -> str:
    page = client.get("/login")
    token = csrf_of(page.text)
    r = client.post("/login", data={"email": email, "password": PASSWORD, "csrf": token, "next": "/"})
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/traces").text)
