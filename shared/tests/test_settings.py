"""No service runs on a secret anyone can know: TALLY_SECRET_KEY is required, long, and not a published default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tally_shared.settings import MIN_SECRET_KEY_LENGTH, ServiceSettings, settings_error


@pytest.mark.parametrize("secret, complaint", [
    (None, "TALLY_SECRET_KEY is not set"),
    ("", "TALLY_SECRET_KEY is not set"),
    ("s" * (MIN_SECRET_KEY_LENGTH - 1), "too short"),
    ("tally-dev-secret-change-me", "published default"),
])
def test_settings_refuse_a_missing_short_or_public_secret(monkeypatch, secret: str | None, complaint: str) -> None:
    monkeypatch.delenv("TALLY_SECRET_KEY", raising=False)
    if secret is not None:
        monkeypatch.setenv("TALLY_SECRET_KEY", secret)
    with pytest.raises(ValidationError) as exc:
        ServiceSettings()
    line = settings_error(exc.value)
    assert complaint in line and "\n" not in line


def test_settings_take_a_long_random_secret_and_never_show_it(monkeypatch) -> None:
    monkeypatch.setenv("TALLY_SECRET_KEY", "k" * MIN_SECRET_KEY_LENGTH)
    settings = ServiceSettings()
    assert settings.secret_key == "k" * MIN_SECRET_KEY_LENGTH
    assert "k" * MIN_SECRET_KEY_LENGTH not in repr(settings)


@pytest.mark.processes
@pytest.mark.parametrize("module", ["ingest", "console"])
def test_a_service_without_a_secret_does_not_start_and_says_why_in_one_line(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TALLY_SECRET_KEY"}
    done = subprocess.run([sys.executable, "-m", module, "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith(f"{module}: cannot start: TALLY_SECRET_KEY is not set"), done.stderr


def test_code_can_pass_the_secret_by_field_name(monkeypatch) -> None:
    monkeypatch.delenv("TALLY_SECRET_KEY", raising=False)
    assert ServiceSettings(secret_key="c" * MIN_SECRET_KEY_LENGTH).secret_key == "c" * MIN_SECRET_KEY_LENGTH
