"""Tally scoring service: score configs and scores, validated, versioned and recorded as events."""

from pathlib import Path

SCHEMA = "scoring"
MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = "scoring"
