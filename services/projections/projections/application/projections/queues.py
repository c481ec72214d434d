"""Queues, their items and each reviewer's progress on an item. Every time column merges with LEAST or GREATEST,
so events may arrive in any order (and a rebuild gives the same rows).

Item events are keyed by their trace (one partition per item); a queue row is shared by every item event, so
those only create it when it is missing (``DO NOTHING``: no row lock another replica would wait for)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from projections.application.projections.base import Projection
from projections.application.unit_of_work import UnitOfWork
from projections.domain.merge import to_micros
from tally_shared.bulk import rows_param
from tally_shared.envelope import Payload
from tally_shared.events import (
    QueueCreated,
    QueueItemAdded,
    QueueItemCompleted,
    QueueItemFlagged,
    QueueItemLeased,
    QueueItemLeaseExpired,
    QueueItemReleased,
    QueueItemRemoved,
    QueueItemSkipped,
    QueueItemSkipUndone,
    QueueUpdated,
)
from tally_shared.events.queues import QueueData
from tally_shared.records import Event

Row = dict[str, Any]


def _least(row: Row, col: str, when: datetime) -> bool:
    if row.get(col) is None or when < row[col]:
        row[col] = when
        return True
    return False


def _greatest(row: Row, col: str, when: datetime) -> None:
    if row.get(col) is None or when > row[col]:
        row[col] = when


def _added(p: dict[str, Any], item: Row, _rev: Row | None, when: datetime) -> None:
    if _least(item, "added_at", when):
        item["reason"] = p["reason"]
        item["rule_id"] = p.get("rule_id")


def _removed(_p: dict[str, Any], item: Row, _rev: Row | None, when: datetime) -> None:
    _least(item, "removed_at", when)


def _leased(_p: dict[str, Any], item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _least(item, "first_leased_at", when)
    _least(rev, "leased_at", when)
    _greatest(rev, "last_leased_at", when)


def _skip_undone(_p: dict[str, Any], _item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _greatest(rev, "skip_undone_at", when)


def _ended(_p: dict[str, Any], _item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _greatest(rev, "last_ended_at", when)


def _completed(p: dict[str, Any], item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _ended(p, item, rev, when)
    _least(rev, "completed_at", when)
    if p["item_completed"]:
        _least(item, "completed_at", when)


def _skipped(p: dict[str, Any], item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _ended(p, item, rev, when)
    _greatest(rev, "last_skipped_at", when)
    if _least(rev, "skipped_at", when):
        rev["skip_reason"] = p.get("reason")


def _flagged(p: dict[str, Any], item: Row, rev: Row | None, when: datetime) -> None:
    assert rev is not None
    _ended(p, item, rev, when)
    _least(item, "flagged_at", when)
    if _least(rev, "flagged_at", when):
        rev["flag_reason"] = p.get("reason")


ItemStep = Callable[[dict[str, Any], Row, Row | None, datetime], None]
# per item event: how it changes the item and (for the reviewer's own events) the reviewer's row
_ITEM_STEPS: dict[type[Payload], tuple[ItemStep, bool]] = {
    QueueItemAdded: (_added, False),
    QueueItemRemoved: (_removed, False),
    QueueItemLeased: (_leased, True),
    QueueItemSkipUndone: (_skip_undone, True),
    QueueItemCompleted: (_completed, True),
    QueueItemSkipped: (_skipped, True),
    QueueItemFlagged: (_flagged, True),
    QueueItemReleased: (_ended, True),
    QueueItemLeaseExpired: (_ended, True),
}
_QUEUE_EVENTS: dict[type[Payload], bool] = {QueueCreated: True, QueueUpdated: False}  # -> created


def traces_of(e: Event) -> Iterable[str | None]:
    ref = e.payload.get("item")
    return (ref.get("trace_id"), ref["object_id"]) if ref is not None else ()


async def apply(events: list[Event], uow: UnitOfWork) -> None:
    gone = uow.state.gone
    queues: dict[tuple[str, str], Row] = {}
    placeholders: dict[tuple[str, str], Row] = {}
    items: dict[tuple[str, str, str], Row] = {}
    reviews: dict[tuple[str, str, str, str], Row] = {}
    for e in events:
        p = e.payload
        when = e.occurred_at
        created = _QUEUE_EVENTS.get(e.cls)
        if created is not None:
            q = QueueData.model_validate(p["queue"])  # rare: the model gives the snapshot its defaults
            key = (e.project, q.id)
            ts = to_micros(when)
            cur = queues.get(key)
            row = {"project_id": e.project, "id": q.id, "name": q.name, "data": q.model_dump(mode="json"),
                   "created": created, "event_ts": ts}
            if cur is None or ts >= cur["event_ts"]:
                row["created"] = row["created"] or bool(cur and cur["created"])
                queues[key] = row
            else:
                cur["created"] = cur["created"] or row["created"]
            continue
        ref = p["item"]
        qkey = (e.project, ref["queue_id"])
        # an item event before its QueueCreated: the queue exists, its name is not known yet
        placeholders.setdefault(qkey, {"project_id": e.project, "id": ref["queue_id"], "name": None,
                                       "data": None, "created": False, "event_ts": -1})
        if any((e.project, tid) in gone for tid in traces_of(e) if tid):
            # the item went with its deleted trace (its queue stays, whatever the order events came in)
            continue
        ikey = (e.project, ref["queue_id"], ref["item_id"])
        item = items.get(ikey)
        if item is None:
            item = items[ikey] = {"project_id": e.project, "queue_id": ref["queue_id"], "item_id": ref["item_id"],
                                  "object_type": str(ref["object_type"]), "object_id": ref["object_id"],
                                  "trace_id": ref.get("trace_id"), "last_event_at": when}
        item["trace_id"] = item.get("trace_id") or ref.get("trace_id")
        if when > item["last_event_at"]:
            item["last_event_at"] = when
        step, by_reviewer = _ITEM_STEPS[e.cls]
        rev = None
        if by_reviewer:
            reviewer = p["reviewer"]
            rev = reviews.setdefault((e.project, ref["queue_id"], ref["item_id"], reviewer), {
                "project_id": e.project, "queue_id": ref["queue_id"], "item_id": ref["item_id"],
                "reviewer": reviewer})
        step(p, item, rev, when)
    sql = uow.sql
    if queues:
        await uow.execute(sql.sql_queue_up, rows_param(sorted(queues.values(), key=lambda r: (r["project_id"],
                                                                                          r["id"]))))
    fresh = [r for k, r in sorted(placeholders.items()) if k not in queues]
    if fresh:
        await uow.execute(sql.sql_queue_placeholder, rows_param(fresh))
    if items:
        await uow.execute(sql.sql_items_up, rows_param(sorted(items.values(), key=lambda r: (
            r["project_id"], r["queue_id"], r["item_id"]))))
    if reviews:
        await uow.execute(sql.sql_reviews_up, rows_param(sorted(reviews.values(), key=lambda r: (
            r["project_id"], r["queue_id"], r["item_id"], r["reviewer"]))))


HANDLES: tuple[type[Payload], ...] = (*_QUEUE_EVENTS, *_ITEM_STEPS)
PROJECTION = Projection("queues", HANDLES, apply, traces_of)
