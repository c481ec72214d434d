"""The app factory named by ``python -m scoring serve`` (the wiring is in scoring/bootstrap.py)."""

from __future__ import annotations

from fastapi import FastAPI

from scoring.bootstrap import create_app_for
from scoring.config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_app_for(settings)
