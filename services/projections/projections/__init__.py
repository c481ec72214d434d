"""Tally projections service: read models built from every topic, rebuildable from the event log."""

from pathlib import Path

SCHEMA = "projections"
MIGRATIONS = Path(__file__).parent / "migrations"
