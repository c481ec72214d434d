"""Per-field last-write-wins merging of partial updates (pure).

A partial update says only the fields its producer set. Each field keeps the ``occurred_at`` (epoch microseconds)
of the event that last set it; an update wins a field when it is at least as recent. Ties go to the later
application, and a trace's events all travel on one partition, so a replay applies them in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def field_bits(names: Sequence[str]) -> dict[str, int]:
    """Each field's bit in a packed ``field_ts``: its position in ``names`` (so such lists only ever grow at the
    end: the positions are stored)."""
    return {name: 1 << i for i, name in enumerate(names)}


def pack_field_ts(field_ts: dict[str, int], bits: dict[str, int]) -> list[int]:
    """``field_ts`` as stored: ``[ts, mask, ts, mask, ...]``, each distinct timestamp once with the bits of the
    fields it set (a row's fields mostly share one or two). A fraction of the bytes of a field -> ts object,
    and far cheaper for PostgreSQL to parse and keep."""
    by_ts: dict[int, int] = {}
    for name, ts in field_ts.items():
        bit = bits.get(name)
        if bit is not None:  # a name no longer merged (only an old field -> ts object could hold one)
            by_ts[ts] = by_ts.get(ts, 0) | bit
    return [x for pair in by_ts.items() for x in pair]


def unpack_field_ts(stored: list[int] | dict[str, int], names: Sequence[str]) -> dict[str, int]:
    """The field -> ts dict of a stored ``field_ts``, packed or (as rows written before the packed form) not."""
    if isinstance(stored, dict):
        return dict(stored)
    out: dict[str, int] = {}
    for i in range(0, len(stored), 2):
        ts, mask = stored[i], stored[i + 1]
        for bit, name in enumerate(names):
            if mask >> bit & 1:
                out[name] = ts
    return out
