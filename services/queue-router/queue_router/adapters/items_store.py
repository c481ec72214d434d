"""Adding items: one path for rules, backfills and explicit adds (item rows, their review slots and the routing
decision in the caller's transaction; ``added_events`` are the QueueItemAdded events the caller publishes)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from queue_router.adapters.tables import item_slots, items, routing_decisions, rule_daily_counts
from tally_shared.bulk import insert_rows, insert_sql, qualified, rows_param, select_by_keys
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events.queues import ItemRef, ObjectType, QueueItemAdded

# The decision log's unique index: one decision of each outcome per (rule, object).
DECISION_ONCE = ("queue_id", "rule_id", "object_type", "object_id", "outcome")


@dataclass
class NewItem:
    project_id: str
    queue_id: str
    object_type: str
    object_id: str
    trace_id: str | None
    reviewers_per_item: int
    reason: str
    rule_id: str | None = None
    added_by: str | None = None
    assignees: list[str] | None = None
    event_id: uuid.UUID | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.queue_id, self.object_type, self.object_id)


def new_item_id() -> str:
    return str(uuid.uuid4())


def item_ref(row: Any) -> ItemRef:
    return ItemRef(queue_id=row["queue_id"], item_id=row["id"], object_type=ObjectType(row["object_type"]),
                   object_id=row["object_id"], trace_id=row["trace_id"])


def event_key(ref: ItemRef) -> str:
    return ref.trace_id or ref.queue_id


EXISTING = select_by_keys(items, ("queue_id", "object_type", "object_id"),
                           ("queue_id", "object_type", "object_id", "status"))


def existing_params(keys: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    """``EXISTING``'s parameters: one array per key column (a list of row values is planned per value, slowly for
    a batch's hundreds of keys)."""
    return {"queue_id": sorted({k[0] for k in keys}), "object_type": sorted({k[1] for k in keys}),
            "object_id": sorted({k[2] for k in keys})}


def existing_of(rows: Sequence[Any], wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """The rows of ``EXISTING`` that are keys of ``wanted`` (the few that match column by column but not as a key
    are dropped)."""
    return {k: r.status for r in rows if (k := (r.queue_id, r.object_type, r.object_id)) in wanted}


async def existing_items(session: AsyncSession, keys: Sequence[tuple[str, str, str]]
                         ) -> dict[tuple[str, str, str], str]:
    """(queue, object type, object id) -> status, for the keys that have an item (removed ones included)."""
    wanted = set(keys)
    if not wanted:
        return {}
    return existing_of((await session.execute(EXISTING, existing_params(keys))).all(), wanted)


# Rules' daily counters set (rows that exist and that the transaction locked: ``RuleStore.lock_daily_counts``).
_SET_COUNTS = (f"UPDATE {qualified(rule_daily_counts)} AS t SET \"count\" = u.n "  # noqa: S608 (names from metadata)
               "FROM unnest(CAST(:count_rules AS text[]), CAST(:count_values AS integer[])) AS u(r, n) "
               "WHERE t.rule_id = u.r AND t.day = CAST(:count_day AS date)")


def _counts_params(counts: tuple[date, dict[str, int]]) -> dict[str, Any]:
    day, values = counts
    return {"count_rules": list(values), "count_values": list(values.values()), "count_day": day}


async def insert_items(session: AsyncSession, new: Sequence[NewItem], decisions: Sequence[dict[str, Any]] = (),
                       counts: tuple[date, dict[str, int]] | None = None) -> list[tuple[NewItem, dict[str, Any]]]:
    """Insert items that are not in their queue yet; returns (request, row) for the ones inserted. ``decisions``
    (that added nothing) are recorded with the ``added`` ones, and ``counts`` (day, rule id -> its count that
    day: counters the transaction locked) are set, in the same statement."""
    if counts is not None and not counts[1]:
        counts = None
    if not new:
        if counts is not None:
            await session.execute(text(_SET_COUNTS), _counts_params(counts))
        await record_decisions(session, decisions)
        return []
    now = datetime.now(UTC)
    by_key: dict[tuple[str, str, str], tuple[NewItem, dict[str, Any]]] = {}
    for n in new:
        if n.key in by_key:
            continue
        row = {"id": new_item_id(), "project_id": n.project_id, "queue_id": n.queue_id,
               "object_type": n.object_type, "object_id": n.object_id, "trace_id": n.trace_id,
               "status": "PENDING", "reviewers_per_item": n.reviewers_per_item, "assignees": n.assignees,
               "rule_id": n.rule_id, "reason": n.reason, "added_by": n.added_by, "created_at": now,
               "updated_at": now, "completions": 0, "flags": 0, "completed_at": None}
        by_key[n.key] = (n, row)
    rows = [row for _, row in by_key.values()]
    slots = [{"item_id": row["id"], "slot_no": i, "queue_id": row["queue_id"], "state": "open",
              "assignees": row["assignees"], "item_created_at": now}
             for row in rows for i in range(max(1, row["reviewers_per_item"]))]
    added = [{"project_id": n.project_id, "queue_id": n.queue_id, "rule_id": n.rule_id, "object_type": n.object_type,
              "object_id": n.object_id, "item_id": row["id"], "outcome": "added", "reason": n.reason,
              "event_id": n.event_id} for n, row in by_key.values()]
    params: dict[str, Any] = {"items": rows_param(rows)["rows"], "slots": rows_param(slots)["rows"],
                              "decisions": rows_param([*added, *decisions])["rows"]}
    if counts is not None:
        params.update(_counts_params(counts))
    inserted_ids = set((await session.execute(
        _add_sql(tuple(rows[0]), tuple(slots[0]), tuple(added[0]), counts is not None), params)).scalars().all())
    return [(n, row) for n, row in by_key.values() if row["id"] in inserted_ids]


_ADD: dict[tuple[Any, ...], TextClause] = {}


def _add_sql(item_cols: tuple[str, ...], slot_cols: tuple[str, ...], decision_cols: tuple[str, ...],
             with_counts: bool = False) -> TextClause:
    """One statement: the items not in their queue yet, the slots of those inserted, and the decisions (those of
    the inserted items, and the ones that add nothing), and with ``with_counts`` the rules' daily counters. Each
    part is the ``tally_shared.bulk`` insert of its table; the slots' foreign key is checked at the end of the
    statement, when the items are there."""
    key = (item_cols, slot_cols, decision_cols, with_counts)
    stmt = _ADD.get(key)
    if stmt is None:
        ins = insert_sql(items, item_cols, conflict=("queue_id", "object_type", "object_id"), update=None,
                         returning="id").text.replace(":rows", ":items")
        sl = _filtered(insert_sql(item_slots, slot_cols).text.replace(":rows", ":slots"),
                       "u.item_id IN (SELECT id FROM i)")
        dec = _filtered(insert_sql(routing_decisions, decision_cols, conflict=DECISION_ONCE).text
                        .replace(":rows", ":decisions"), "(u.item_id IS NULL OR u.item_id IN (SELECT id FROM i))")
        # Identifiers from our own table metadata (see tally_shared.bulk); the data are the three parameters.
        c = f", c AS ({_SET_COUNTS})" if with_counts else ""
        stmt = _ADD[key] = text(f"WITH i AS ({ins}), s AS ({sl}), d AS ({dec}){c} SELECT id FROM i")  # noqa: S608
    return stmt


def _filtered(insert: str, condition: str) -> str:
    """A ``tally_shared.bulk`` insert with a WHERE on its recordset ``u``, before its conflict clause."""
    head, sep, tail = insert.partition(" ON CONFLICT")
    assert head.endswith(")") and "json_to_recordset" in head
    return f"{head} WHERE {condition}{sep}{tail}"


def added_events(done: Sequence[tuple[NewItem, dict[str, Any]]]) -> list[Envelope]:
    """A ``QueueItemAdded`` for each item ``insert_items`` added."""
    out: list[Envelope] = []
    for n, row in done:
        ref = item_ref(row)
        out.append(make_envelope(
            QueueItemAdded(item=ref, rule_id=n.rule_id, reason=n.reason, added_by=n.added_by),
            project=n.project_id, key=event_key(ref), occurred_at=row["created_at"],
        ))
    return out


async def record_decisions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Decisions that added nothing (sampled out, cap reached, previously removed); one per rule, object and
    outcome."""
    if rows:
        await insert_rows(session, routing_decisions, rows, conflict=DECISION_ONCE)
