from __future__ import annotations

import pytest
from fastapi.templating import Jinja2Templates

from console.entrypoints.web import make_templates
from console.testing.pages import Env, make_env


@pytest.fixture(scope="session")
def templates() -> Jinja2Templates:
    return make_templates()


@pytest.fixture
def env(templates: Jinja2Templates) -> Env:
    # Compiling the templates was most of a page test's CPU, paid again by every test's app; they are read-only
    # and the same for every app, so the tests' apps share one environment that compiles each template once.
    env = make_env()
    env.app.state.templates = templates
    return env
