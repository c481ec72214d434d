"""Tally console: the web app where people review traces, set up queues and read the results.

It owns no business data: pages read the projections API and send commands to the scoring and queue-router APIs
through the base URL, on the signed-in person's behalf. Identity (users, roles) is the shared ``identity`` schema.
"""

from pathlib import Path

# The console has no schema of its own; ``python -m console migrate`` is a no-op kept for the common shape.
SCHEMA: str | None = None
MIGRATIONS: Path | None = None
