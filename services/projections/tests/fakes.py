"""In-memory stores for the read side's logic: each answers its application module's Protocol from rows given
up front and records what it was asked, so that the logic that is not SQL (parameter rules, paging, composing,
statistics, blind-review filtering) is tested without PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def trace_row(tid: str, project: str = "p", **fields: Any) -> dict[str, Any]:
    return {"id": tid, "project_id": project, "created_at": T, "updated_at": T, "timestamp": T, **fields}


def observation_row(oid: str, tid: str, project: str = "p", **fields: Any) -> dict[str, Any]:
    return {"id": oid, "trace_id": tid, "project_id": project, "created_at": T, "updated_at": T, **fields}


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def saw(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def asked(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


class FakeDeadLetterRow:
    """What the replay's lock returns: attribute access, as a SQLAlchemy row."""

    def __init__(self, topic: str, partition: int, offset: int, *, key: str | None = "k", size: int = 10,
                 truncated: bool = False, event_type: str | None = "ScoreRecorded") -> None:
        self.id = uuid.uuid4()
        self.topic, self.partition, self.offset, self.key = topic, partition, offset, key
        self.original_size, self.original_truncated, self.event_type = size, truncated, event_type


class FakeDeadLetterChanges(Calls):
    def __init__(self, rows: Sequence[FakeDeadLetterRow], present: bool = True) -> None:
        super().__init__()
        self.rows, self.present = list(rows), present

    async def lock(self, scope: Any, flt: Any, *, limit: int, skip_locked: bool) -> list[Any]:
        self.saw("lock", scope, flt, limit=limit, skip_locked=skip_locked)
        return self.rows[:limit]

    async def originals(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        self.saw("originals", list(ids))
        return {i: f"original-{i}".encode() for i in ids}

    async def mark_replayed(self, scope: Any, chosen: Sequence[uuid.UUID], origins: Sequence[tuple[str, int, int]],
                            *, actor: str, now: datetime) -> int:
        self.saw("mark_replayed", scope, list(chosen), list(origins), actor=actor)
        return len(chosen)

    async def exists(self, scope: Any, ids: Sequence[uuid.UUID] | None) -> bool:
        return self.present

    async def mark_discarded(self, scope: Any, flt: Any, *, limit: int, actor: str, now: datetime) -> int:
        self.saw("mark_discarded", scope, flt, limit=limit, actor=actor)
        return min(limit, len(self.rows))


class FakeDeadLetterStore:
    def __init__(self, changes: FakeDeadLetterChanges) -> None:
        self.changes = changes

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeDeadLetterChanges]:
        yield self.changes
