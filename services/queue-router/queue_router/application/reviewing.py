"""Reviewing: leases on review slots, and what a reviewer does with an item.

An item needing N reviewers has N slot rows. ``next_item`` locks the first claimable slot with
``FOR UPDATE SKIP LOCKED``: concurrent reviewers skip each other's locked rows, and a slot whose row changed
under a waiting reviewer is re-checked by PostgreSQL against the row's new state, so a slot is handed out once.
The ``reviews`` row (item, reviewer) is the reviewer's claim on the item: its primary key makes "never twice to
the same person" hold even for one reviewer asking twice at once.

Lock order everywhere: item row (completions only), then slot row, then review row. ``next_item`` takes no item
lock, so no cycle is possible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import any_, case, exists, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from queue_router.adapters.items_store import event_key, item_ref
from queue_router.adapters.outbox import enqueue
from queue_router.adapters.scoring_api import ScoringPort
from queue_router.adapters.stores import ItemStore, QueueStore
from queue_router.adapters.tables import item_slots, items, queues, reviews
from queue_router.application.items import item_out
from queue_router.domain.errors import Conflict, Invalid, NotFound, Unavailable
from tally_shared.envelope import Envelope, make_envelope
from tally_shared.events.queues import (
    QueueItemCompleted,
    QueueItemFlagged,
    QueueItemLeased,
    QueueItemLeaseExpired,
    QueueItemReleased,
    QueueItemSkipped,
    QueueItemSkipUndone,
)


@dataclass
class ReviewDeps:
    sessions: async_sessionmaker[AsyncSession]
    # Sessions whose connections plan the claim query by its index (see ``CLAIM_SERVER_SETTINGS``).
    claim_sessions: async_sessionmaker[AsyncSession] | None = None
    queue_cache_seconds: float = 2.0
    scoring: ScoringPort | None = None
    _queues: dict[tuple[str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def forget_queue(self, project_id: str, queue_id: str) -> None:
        self._queues.pop((project_id, queue_id), None)


def _now() -> datetime:
    return datetime.now(UTC)


async def _queue(session: AsyncSession, project_id: str, queue_id: str) -> dict[str, Any]:
    q = await QueueStore(session).get(project_id, queue_id)
    if q is None:
        raise NotFound.of("queue", queue_id)
    return q


def reviewer_allowed(queue: dict[str, Any], reviewer: str, email: str | None) -> bool:
    allowed = queue["reviewers"]
    if not allowed:
        return True
    lowered = {a.lower() for a in allowed}
    return reviewer in allowed or reviewer.lower() in lowered or (email is not None and email.lower() in lowered)


async def next_item(deps: ReviewDeps, project_id: str, queue_id: str, reviewer: str, queue: dict[str, Any]
                    ) -> dict[str, Any] | None:
    for _ in range(8):
        try:
            return await _try_lease(deps, project_id, queue_id, reviewer, queue)
        except _Retry:
            continue
    raise Conflict("conflict", "could not lease an item; try again")


class _Retry(Exception):
    """Raised inside the claim transaction to roll it back and look again."""

# ``state <> 'done'`` repeats the partial index's predicate. Without statistics (a queue filled a moment ago, before
# autovacuum analysed it) the planner guesses one row and sorts the whole queue, then anti-joins by sequential scans:
# hundreds of ms. The claim transaction therefore steers it to walk the index in ORDER BY order and stop at the first
# claimable slot: the claim runs on connections with CLAIM_SERVER_SETTINGS (a separate small pool), which costs no
# extra round trip. Its other statements are primary-key lookups, which these settings do not affect.
# synchronous_commit off: a lease is soft state. A database crash can lose the last few milliseconds of leases
# (with their QueueItemLeased outbox rows, in the same transaction), which only returns those slots to the pool;
# completions, skips and flags commit durably on the main pool.
CLAIM_SERVER_SETTINGS = {"enable_sort": "off", "enable_seqscan": "off", "enable_bitmapscan": "off",
                         "synchronous_commit": "off"}
# One statement claims a slot: pick it (index order, skipping rows other reviewers hold locked), record the
# reviewer's claim on the item (the reviews primary key refuses a second claim by the same reviewer), mark an
# expired holder's review as expired, lease the slot, and return the item. ``leased`` is 0 when the reviewer's
# claim was refused (they took another slot of this item concurrently): the caller rolls back and looks again.
_CLAIM_SQL = """
WITH s AS (
  SELECT s.item_id, s.slot_no, s.reviewer AS old_reviewer, s.lease_id AS old_lease
  FROM queue_router.item_slots s
  WHERE s.queue_id = :queue_id
    AND s.state <> 'done'
    AND (s.state = 'open' OR (s.state = 'leased' AND s.lease_expires_at < now()))
    AND (s.assignees IS NULL OR CAST(:reviewer AS varchar) = ANY(s.assignees))
    AND NOT EXISTS (
      SELECT 1 FROM queue_router.reviews r
      WHERE r.item_id = s.item_id AND r.reviewer = :reviewer
        AND r.status IN ('in_progress', 'completed', 'skipped', 'flagged'))
  ORDER BY s.item_created_at, s.item_id, s.slot_no
  LIMIT 1
  FOR UPDATE SKIP LOCKED
), rv AS (
  INSERT INTO queue_router.reviews AS r
    (item_id, reviewer, project_id, queue_id, status, lease_id, slot_no, started_at, updated_at)
  SELECT s.item_id, :reviewer, :project_id, :queue_id, 'in_progress', :lease_id, s.slot_no, :now, :now FROM s
  ON CONFLICT (item_id, reviewer) DO UPDATE
    SET status = 'in_progress', lease_id = EXCLUDED.lease_id, slot_no = EXCLUDED.slot_no, reason = NULL,
        started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at
    WHERE r.status IN ('released', 'expired')
  RETURNING r.item_id, r.slot_no
), expired AS (
  UPDATE queue_router.reviews r SET status = 'expired', updated_at = :now
  FROM s, rv
  WHERE s.old_reviewer IS NOT NULL AND r.item_id = s.item_id AND r.reviewer = s.old_reviewer
    AND r.lease_id = s.old_lease AND r.status = 'in_progress'
  RETURNING r.reviewer
), leased AS (
  UPDATE queue_router.item_slots t
  SET state = 'leased', reviewer = :reviewer, lease_id = :lease_id, lease_expires_at = :expires
  FROM rv WHERE t.item_id = rv.item_id AND t.slot_no = rv.slot_no
  RETURNING t.item_id
)
SELECT s.slot_no AS claimed_slot, (SELECT count(*) FROM leased) AS leased,
       (SELECT count(*) FROM expired) AS expired_n, s.old_reviewer AS expired_reviewer,
       s.old_lease AS expired_lease, i.*
FROM s JOIN queue_router.items i ON i.id = s.item_id
"""
# The same claim restricted to one item: a reviewer taking back their skip gets that item again, if a slot is free.
_CLAIM_ITEM = text(_CLAIM_SQL.replace("WHERE s.queue_id = :queue_id",
                                      "WHERE s.queue_id = :queue_id AND s.item_id = :item_id"))
_CLAIM = text(_CLAIM_SQL)
_CLAIM_EXTRA = ("claimed_slot", "leased", "expired_n", "expired_reviewer", "expired_lease")


async def _try_lease(deps: ReviewDeps, project_id: str, queue_id: str, reviewer: str, queue: dict[str, Any],
                     item_id: str | None = None) -> dict[str, Any] | None:
    now = _now()
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=queue["lease_seconds"])
    params = {"queue_id": queue_id, "reviewer": reviewer, "project_id": project_id, "lease_id": lease_id,
              "now": now, "expires": expires}
    async with (deps.claim_sessions or deps.sessions)() as session, session.begin():
        if item_id is None:
            row = (await session.execute(_CLAIM, params)).first()
        else:
            row = (await session.execute(_CLAIM_ITEM, {**params, "item_id": item_id})).first()
        if row is None:
            return None
        if row.leased == 0:
            # This reviewer took another slot of the same item concurrently; undo and look again.
            raise _Retry
        item = {k: v for k, v in row._mapping.items() if k not in _CLAIM_EXTRA}
        ref = item_ref(item)
        events: list[Envelope] = []
        if row.expired_n:
            events.append(make_envelope(
                QueueItemLeaseExpired(item=ref, reviewer=row.expired_reviewer, lease_id=row.expired_lease),
                project=project_id, key=event_key(ref), occurred_at=now))
        events.append(make_envelope(
            QueueItemLeased(item=ref, reviewer=reviewer, lease_id=lease_id, expires_at=expires),
            project=project_id, key=event_key(ref), occurred_at=now))
        await enqueue(session, events)
    out = item_out(item, 1)
    out["reviewer_status"] = "in_progress"
    out["blind"] = queue["blind"]
    out["score_configs"] = queue["score_configs"]
    return {"item": out, "lease": {"id": lease_id, "expires_at": expires, "slot": row.claimed_slot}}


async def _held_slot(session: AsyncSession, item_id: str, reviewer: str, lease_id: str | None) -> Any:
    slot = (await session.execute(select(item_slots).where(
        item_slots.c.item_id == item_id, item_slots.c.reviewer == reviewer,
        item_slots.c.state.in_(["leased", "done"])).with_for_update())).first()
    if slot is None or (lease_id is not None and slot.lease_id != lease_id):
        raise Conflict("lease_lost", "you hold no lease on this item (it expired and was taken, or was "
                                          "released)", {"field": "lease_id", "rule": "current_lease"})
    return slot


async def _item_row(session: AsyncSession, project_id: str, queue_id: str, item_id: str, lock: bool) -> Any:
    stmt = select(items).where(items.c.id == item_id, items.c.queue_id == queue_id,
                               items.c.project_id == project_id)
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFound("not_found", f"item {item_id!r} not found")
    return row


async def check_required_scores(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                                queue: dict[str, Any], creds: dict[str, str], *, via_api_key: bool) -> None:
    """A completion needs a score of every required config on the item's object by the reviewer (or, when an API
    key acts for the reviewer, one the key posted without an author). Scoring is asked directly, so a score posted
    a moment ago counts."""
    required = [c["id"] for c in queue["score_configs"] if c.get("required", True)]
    if not required:
        return
    async with deps.sessions() as session:
        item = (await _item_row(session, project_id, queue_id, item_id, lock=False))._mapping
        object_type, object_id = item["object_type"], item["object_id"]
    if deps.scoring is None:
        raise Unavailable("scoring_unavailable", "required score configs cannot be checked")
    have = await deps.scoring.scored_configs(creds, object_type=object_type, object_id=object_id,
                                             config_ids=required, reviewer=reviewer, authorless_ok=via_api_key)
    missing = [c for c in required if c not in have]
    if missing:
        raise Invalid("scores_required", "score every required config before completing", [
            {"field": "score_configs", "rule": "required", "config_id": c,
             "message": f"no score of required config {c!r} by {reviewer!r} on this item"} for c in missing])


async def complete(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                   lease_id: str | None) -> dict[str, Any]:
    async with deps.sessions() as session, session.begin():
        item = dict((await _item_row(session, project_id, queue_id, item_id, lock=True))._mapping)
        review = (await session.execute(select(reviews).where(
            reviews.c.item_id == item_id, reviews.c.reviewer == reviewer))).first()
        if review is not None and review.status == "completed":
            return item_out(item) | {"reviewer_status": "completed"}
        if item["status"] != "PENDING":
            raise Conflict("item_closed", f"the item is {item['status'].lower()}")
        slot = await _held_slot(session, item_id, reviewer, lease_id)
        now = _now()
        await session.execute(update(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.slot_no == slot.slot_no,
        ).values(state="done", lease_expires_at=None))
        await session.execute(update(reviews).where(reviews.c.item_id == item_id, reviews.c.reviewer == reviewer)
                              .values(status="completed", completed_at=now, updated_at=now, reason=None))
        completions = item["completions"] + 1
        done = completions >= item["reviewers_per_item"]
        changes: dict[str, Any] = {"completions": completions, "updated_at": now}
        if done:
            changes.update(status="COMPLETED", completed_at=now)
        await session.execute(update(items).where(items.c.id == item_id).values(**changes))
        item.update(changes)
        ref = item_ref(item)
        await enqueue(session, [make_envelope(
            QueueItemCompleted(item=ref, reviewer=reviewer, item_completed=done),
            project=project_id, key=event_key(ref), occurred_at=now)])
    return item_out(item) | {"reviewer_status": "completed"}


async def give_back(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    lease_id: str | None, *, status: str, reason: str | None) -> dict[str, Any]:
    """skip / flag / release: the reviewer's slot returns to the pool."""
    async with deps.sessions() as session, session.begin():
        item = dict((await _item_row(session, project_id, queue_id, item_id, lock=False))._mapping)
        if item["status"] != "PENDING":
            raise Conflict("item_closed", f"the item is {item['status'].lower()}")
        slot = await _held_slot(session, item_id, reviewer, lease_id)
        if slot.state == "done":
            raise Conflict("already_completed", "you completed this item already")
        now = _now()
        await session.execute(update(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.slot_no == slot.slot_no,
        ).values(state="open", reviewer=None, lease_id=None, lease_expires_at=None))
        await session.execute(update(reviews).where(reviews.c.item_id == item_id, reviews.c.reviewer == reviewer)
                              .values(status=status, reason=reason, updated_at=now))
        ref = item_ref(item)
        if status == "released":
            await enqueue(session, [make_envelope(
                QueueItemReleased(item=ref, reviewer=reviewer, lease_id=slot.lease_id),
                project=project_id, key=event_key(ref), occurred_at=now)])
        if status == "flagged":
            await session.execute(update(items).where(items.c.id == item_id)
                                  .values(flags=items.c.flags + 1, updated_at=now))
            item["flags"] += 1
            await enqueue(session, [make_envelope(QueueItemFlagged(item=ref, reviewer=reviewer, reason=reason),
                                                  project=project_id, key=event_key(ref), occurred_at=now)])
        elif status == "skipped":
            await enqueue(session, [make_envelope(QueueItemSkipped(item=ref, reviewer=reviewer, reason=reason),
                                                  project=project_id, key=event_key(ref), occurred_at=now)])
        live = await ItemStore(session).live_leases(item_id)
    return item_out(item, live) | {"reviewer_status": "pending" if status == "released" else status}


async def undo_skip(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    queue: dict[str, Any]) -> dict[str, Any]:
    """Take back a skip: the item is offered to the reviewer again, leased to them now when a slot is free."""
    async with deps.sessions() as session, session.begin():
        item = dict((await _item_row(session, project_id, queue_id, item_id, lock=False))._mapping)
        done = (await session.execute(update(reviews).where(
            reviews.c.item_id == item_id, reviews.c.reviewer == reviewer, reviews.c.status == "skipped",
        ).values(status="released", reason=None, updated_at=_now()).returning(reviews.c.item_id))).first()
        if done is None:
            raise Conflict("not_skipped", "you have not skipped this item")
        ref = item_ref(item)
        await enqueue(session, [make_envelope(QueueItemSkipUndone(item=ref, reviewer=reviewer),
                                              project=project_id, key=event_key(ref))])
    if item["status"] != "PENDING":
        return {"item": item_out(item) | {"reviewer_status": "pending"}, "lease": None}
    for _ in range(8):
        try:
            got = await _try_lease(deps, project_id, queue_id, reviewer, queue, item_id=item_id)
            break
        except _Retry:
            continue
    else:
        got = None
    if got is None:
        async with deps.sessions() as session:
            live = await ItemStore(session).live_leases(item_id)
        return {"item": item_out(item, live) | {"reviewer_status": "pending"}, "lease": None}
    return got


_EXPIRE = text("""
WITH s AS (
  SELECT item_id, slot_no, reviewer, lease_id FROM queue_router.item_slots
  WHERE state = 'leased' AND lease_expires_at < now()
  ORDER BY lease_expires_at LIMIT :limit
  FOR UPDATE SKIP LOCKED
), opened AS (
  UPDATE queue_router.item_slots t SET state = 'open', reviewer = NULL, lease_id = NULL, lease_expires_at = NULL
  FROM s WHERE t.item_id = s.item_id AND t.slot_no = s.slot_no
  RETURNING t.item_id
), rv AS (
  UPDATE queue_router.reviews r SET status = 'expired', updated_at = now()
  FROM s WHERE r.item_id = s.item_id AND r.reviewer = s.reviewer AND r.lease_id = s.lease_id
    AND r.status = 'in_progress'
  RETURNING r.item_id
)
SELECT s.reviewer, s.lease_id, i.* FROM s JOIN queue_router.items i ON i.id = s.item_id
""")


async def expire_leases(sessions: async_sessionmaker[AsyncSession], limit: int = 500) -> int:
    """Return leases that ran out to the pool, each with a QueueItemLeaseExpired event, so read models stop
    counting them as work in progress. Returns how many were expired."""
    async with sessions() as session, session.begin():
        rows = (await session.execute(_EXPIRE, {"limit": limit})).all()
        envelopes = []
        for r in rows:
            m = dict(r._mapping)
            ref = item_ref(m)
            envelopes.append(make_envelope(QueueItemLeaseExpired(item=ref, reviewer=m["reviewer"],
                                                                 lease_id=m["lease_id"]),
                                           project=m["project_id"], key=event_key(ref)))
        await enqueue(session, envelopes)
    return len(rows)


async def heartbeat(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    lease_id: str | None, lease_seconds: int) -> dict[str, Any]:
    async with deps.sessions() as session, session.begin():
        await _item_row(session, project_id, queue_id, item_id, lock=False)
        slot = await _held_slot(session, item_id, reviewer, lease_id)
        if slot.state != "leased":
            raise Conflict("already_completed", "you completed this item already")
        expires = _now() + timedelta(seconds=lease_seconds)
        await session.execute(update(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.slot_no == slot.slot_no,
        ).values(lease_expires_at=expires))
    return {"lease": {"id": slot.lease_id, "expires_at": expires, "slot": slot.slot_no}}


async def progress(deps: ReviewDeps, project_id: str, queue_id: str) -> dict[str, Any]:
    now = _now()
    hour_ago = now - timedelta(hours=1)
    day_ago = now - timedelta(hours=24)
    live = exists().where(item_slots.c.item_id == items.c.id, item_slots.c.state == "leased",
                          item_slots.c.lease_expires_at > func.now())
    skipped = exists().where(reviews.c.item_id == items.c.id, reviews.c.status == "skipped")
    # Each item in exactly one bucket: an item only skipped so far counts as skipped, not also as pending.
    item_state = case(
        (items.c.status != "PENDING", items.c.status),
        (or_(items.c.completions > 0, live), "IN_PROGRESS"),
        (skipped, "SKIPPED"),
        else_="PENDING",
    )
    async with deps.sessions() as session:
        queue = await _queue(session, project_id, queue_id)
        by_status: dict[str, int] = dict((await session.execute(
            select(item_state, func.count()).where(items.c.queue_id == queue_id).group_by(item_state))).all())
        items_done_hour = (await session.execute(select(func.count()).select_from(items).where(
            items.c.queue_id == queue_id, items.c.completed_at >= hour_ago))).scalar_one()
        per_reviewer = (await session.execute(
            select(reviews.c.reviewer, reviews.c.status, func.count())
            .where(reviews.c.queue_id == queue_id).group_by(reviews.c.reviewer, reviews.c.status))).all()
        hourly = (await session.execute(
            select(reviews.c.reviewer, func.count(),
                   func.count().filter(reviews.c.completed_at >= hour_ago),
                   func.min(reviews.c.completed_at), func.max(reviews.c.completed_at))
            .where(reviews.c.queue_id == queue_id, reviews.c.status == "completed",
                   reviews.c.completed_at >= day_ago)
            .group_by(reviews.c.reviewer))).all()
        series = (await session.execute(
            select(func.date_trunc("hour", items.c.completed_at).label("h"), func.count())
            .where(items.c.queue_id == queue_id, items.c.completed_at >= day_ago)
            .group_by(text("1")).order_by(text("1")))).all()
    reviewers: dict[str, dict[str, Any]] = {}
    for r, st, n in per_reviewer:
        d = reviewers.setdefault(r, {"reviewer": r, "counts": {k: 0 for k in
                                                                ("in_progress", "completed", "skipped", "flagged",
                                                                 "released", "expired")},
                                     "completed_last_hour": 0, "completed_per_hour_24h": 0.0})
        d["counts"][st] = n
    for r, n24, n1, first, last in hourly:
        d = reviewers[r]
        d["completed_last_hour"] = n1
        # Rate over the span this reviewer actually worked in the last day (at least one hour).
        span_h = max(1.0, (last - first).total_seconds() / 3600) if first and last else 1.0
        d["completed_per_hour_24h"] = round(n24 / span_h, 2)
    counts = {k: int(by_status.get(k, 0)) for k in ("PENDING", "SKIPPED", "IN_PROGRESS", "COMPLETED", "REMOVED")}
    total = sum(v for k, v in counts.items() if k != "REMOVED")
    return {
        "queue_id": queue_id, "reviewers_per_item": queue["reviewers_per_item"],
        "items": {"total": total, **{k.lower(): v for k, v in counts.items()}},
        "completed_fraction": round(counts["COMPLETED"] / total, 4) if total else 0.0,
        "items_completed_last_hour": items_done_hour,
        "items_completed_per_hour": [{"hour": h, "completed": n} for h, n in series],
        "reviewers": sorted(reviewers.values(), key=lambda d: d["reviewer"]),
    }


async def queue_for_review(deps: ReviewDeps, project_id: str, queue_id: str) -> dict[str, Any]:
    """The queue's settings, cached for a moment: every next-item call needs them, and they rarely change."""
    now = time.monotonic()
    hit = deps._queues.get((project_id, queue_id))
    if hit is not None and hit[0] > now:
        q = hit[1]
    else:
        async with deps.sessions() as session:
            q = await _queue(session, project_id, queue_id)
        deps._queues[(project_id, queue_id)] = (now + deps.queue_cache_seconds, q)
    if q["is_archived"]:
        raise Conflict("queue_archived", "the queue is archived")
    return q



async def blind_traces(deps: ReviewDeps, p: Any) -> dict[str, Any]:
    """Traces whose automated and peer scores the caller may not read now: those of open items in blind queues
    that are assigned to them, leased by them, or that they reviewed while others still review. Leads (members),
    admins and API keys read everything."""
    if p.role != "reviewer" or p.user_id is None:
        return {"blind": False, "trace_ids": []}
    who = p.user_id
    held = exists().where(reviews.c.item_id == items.c.id, reviews.c.reviewer == who,
                          reviews.c.status.in_(["in_progress", "completed", "skipped", "flagged"]))
    blind_q = select(queues.c.id).where(queues.c.project_id == p.project_id, queues.c.blind.is_(True))
    cond = [items.c.project_id == p.project_id, items.c.status == "PENDING", items.c.trace_id.isnot(None),
            items.c.queue_id.in_(blind_q), or_(held, literal(who) == any_(items.c.assignees))]
    async with deps.sessions() as session:
        rows = (await session.execute(
            select(items.c.trace_id).where(*cond)
            .distinct().limit(10_000))).scalars().all()
    return {"blind": True, "user_id": who, "trace_ids": sorted(rows)}
