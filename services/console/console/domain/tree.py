"""The observation tree of a trace: parent links to depth-first rows with timing offsets for a waterfall."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


@dataclass
class Row:
    obs: dict[str, Any]
    depth: int
    duration_ms: float | None
    # Position in the trace's timeline, as fractions of the whole span (0..1), for the waterfall bar.
    offset: float = 0.0
    width: float = 0.0
    children: int = 0
    cost: float | None = None
    tokens: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _usage_total(usage: Any) -> float | None:
    if not isinstance(usage, dict) or not usage:
        return None
    if isinstance(usage.get("total"), int | float):
        return float(usage["total"])
    nums = [v for k, v in usage.items() if isinstance(v, int | float) and k in ("input", "output")]
    return float(sum(nums)) if nums else None


def _cost_total(cost: Any) -> float | None:
    if not isinstance(cost, dict) or not cost:
        return None
    if isinstance(cost.get("total"), int | float):
        return float(cost["total"])
    nums = [v for v in cost.values() if isinstance(v, int | float)]
    return float(sum(nums)) if nums else None


def build_rows(observations: list[dict[str, Any]]) -> list[Row]:
    """Depth-first order, siblings by start time; orphans (parent unknown) become roots; cycles are cut."""
    by_id = {o["id"]: o for o in observations if o.get("id")}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for o in observations:
        parent = o.get("parent_observation_id")
        if parent not in by_id or parent == o.get("id"):
            parent = None
        children.setdefault(parent, []).append(o)

    def start_key(o: dict[str, Any]) -> tuple[int, str]:
        t = parse_time(o.get("start_time"))
        return (0, t.isoformat()) if t else (1, str(o.get("id")))

    starts = [t for o in observations if (t := parse_time(o.get("start_time")))]
    ends = [t for o in observations if (t := parse_time(o.get("end_time")))]
    t0 = min(starts) if starts else None
    t1 = max(ends + starts) if starts else None
    span = (t1 - t0).total_seconds() if t0 and t1 else 0.0

    rows: list[Row] = []
    seen: set[str] = set()

    def visit(o: dict[str, Any], depth: int) -> None:
        oid = o.get("id")
        if oid in seen:
            return
        seen.add(str(oid))
        s, e = parse_time(o.get("start_time")), parse_time(o.get("end_time"))
        dur = (e - s).total_seconds() * 1000 if s and e else None
        row = Row(o, depth, dur, cost=_cost_total(o.get("cost_details")), tokens=_usage_total(o.get("usage_details")))
        if t0 and s and span > 0:
            row.offset = max(0.0, min(1.0, (s - t0).total_seconds() / span))
            row.width = max(0.005, min(1.0 - row.offset, ((e or s) - s).total_seconds() / span))
        elif s:
            row.width = 1.0
        kids = sorted(children.get(str(oid), []), key=start_key)
        row.children = len(kids)
        rows.append(row)
        for k in kids:
            visit(k, depth + 1)

    for root in sorted(children.get(None, []), key=start_key):
        visit(root, 0)
    for o in observations:  # anything left (cycles) still shows up
        if str(o.get("id")) not in seen:
            visit(o, 0)
    return rows


def totals(rows: list[Row]) -> dict[str, float | None]:
    costs = [r.cost for r in rows if r.cost is not None]
    tokens = [r.tokens for r in rows if r.tokens is not None]
    return {"cost": sum(costs) if costs else None, "tokens": sum(tokens) if tokens else None}
