"""Tally ingest service: the front door for traces (OTLP, Langfuse batch, native batch) and SDK scores."""

from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "ingest"
