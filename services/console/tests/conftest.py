from __future__ import annotations

import pytest

from console.testing.pages import Env, make_env


@pytest.fixture
def env() -> Env:
    return make_env()
