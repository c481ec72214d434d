"""Per-field last-write-wins merging of partial updates (pure).

A partial update says only the fields its producer set. Each field keeps the ``occurred_at`` (epoch microseconds)
of the event that last set it; an update wins a field when it is at least as recent. Ties go to the later
application, and a trace's events all travel on one partition, so a replay applies them in the same order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def merge_fields(
    row: dict[str, Any], field_ts: dict[str, int], updates: dict[str, Any], ts: int
) -> list[str]:
    """Apply ``updates`` (field -> value) stamped ``ts`` to ``row`` in place; return the fields that changed."""
    changed: list[str] = []
    for name, value in updates.items():
        seen = field_ts.get(name)
        if seen is not None and seen > ts:
            continue
        field_ts[name] = ts
        if row.get(name) != value:
            row[name] = value
            changed.append(name)
    return changed
