"""Tally queue-router: routes live traces and automated scores into annotation queues, and hands queue items to
reviewers under leases."""

from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "queue_router"
