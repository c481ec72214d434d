"""Which dead letters a read or command is about."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """Whose dead letters: one project's (the HTTP API), those of no project, or all (operators' command line)."""

    project_id: str | None = None
    everything: bool = False


@dataclass(frozen=True)
class Filter:
    status: str | None = "open"
    consumer: str | None = None
    topic: str | None = None
    reason_code: str | None = None
    event_id: uuid.UUID | None = None
    ids: Sequence[uuid.UUID] | None = None
