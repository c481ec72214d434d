"""The reviewing store: leases on review slots, reviews, and the queue's progress, in the unit of work's
transaction.

Lock order everywhere: item row (completions only), then slot row, then review row. The claim takes no item lock,
so no cycle is possible.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import any_, case, exists, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from queue_router.adapters.tables import item_slots, items, queues, reviews

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


_CLAIM_EXTRA = ("claimed_slot", "leased", "expired_n", "expired_reviewer", "expired_lease")


class ReviewStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, params: dict[str, Any], item_id: str | None = None) -> tuple[Any, dict[str, Any]] | None:
        """Claim the first claimable slot of the queue (of the item, with ``item_id``) for the reviewer; returns the
        claim's row (``claimed_slot``, ``leased``, ``expired_*``) and the item, or None when nothing is left."""
        if item_id is None:
            row = (await self.session.execute(_CLAIM, params)).first()
        else:
            row = (await self.session.execute(_CLAIM_ITEM, {**params, "item_id": item_id})).first()
        if row is None:
            return None
        return row, {k: v for k, v in row._mapping.items() if k not in _CLAIM_EXTRA}

    async def held_slot(self, item_id: str, reviewer: str) -> Any:
        """The reviewer's leased or done slot of the item, locked; None when they hold none."""
        return (await self.session.execute(select(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.reviewer == reviewer,
            item_slots.c.state.in_(["leased", "done"])).with_for_update())).first()

    async def review(self, item_id: str, reviewer: str) -> Any:
        return (await self.session.execute(select(reviews).where(
            reviews.c.item_id == item_id, reviews.c.reviewer == reviewer))).first()

    async def set_slot(self, item_id: str, slot_no: int, **values: Any) -> None:
        await self.session.execute(update(item_slots).where(
            item_slots.c.item_id == item_id, item_slots.c.slot_no == slot_no).values(**values))

    async def set_review(self, item_id: str, reviewer: str, **values: Any) -> None:
        await self.session.execute(update(reviews).where(reviews.c.item_id == item_id, reviews.c.reviewer == reviewer)
                                   .values(**values))

    async def undo_skip(self, item_id: str, reviewer: str, now: datetime) -> bool:
        """The reviewer's skip becomes a release (the item is offered to them again); False if they had none."""
        done = (await self.session.execute(update(reviews).where(
            reviews.c.item_id == item_id, reviews.c.reviewer == reviewer, reviews.c.status == "skipped",
        ).values(status="released", reason=None, updated_at=now).returning(reviews.c.item_id))).first()
        return done is not None

    async def add_flag(self, item_id: str, now: datetime) -> None:
        await self.session.execute(update(items).where(items.c.id == item_id)
                                   .values(flags=items.c.flags + 1, updated_at=now))

    async def expire(self, limit: int) -> list[dict[str, Any]]:
        """Leases that ran out return to the pool; returns each with its holder and item."""
        return [dict(r._mapping) for r in (await self.session.execute(_EXPIRE, {"limit": limit})).all()]

    async def progress(self, queue_id: str, hour_ago: datetime, day_ago: datetime) -> dict[str, Any]:
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
        s = self.session
        return {
            "by_status": dict((await s.execute(
                select(item_state, func.count()).where(items.c.queue_id == queue_id).group_by(item_state))).all()),
            "items_done_hour": (await s.execute(select(func.count()).select_from(items).where(
                items.c.queue_id == queue_id, items.c.completed_at >= hour_ago))).scalar_one(),
            "per_reviewer": (await s.execute(
                select(reviews.c.reviewer, reviews.c.status, func.count())
                .where(reviews.c.queue_id == queue_id).group_by(reviews.c.reviewer, reviews.c.status))).all(),
            "hourly": (await s.execute(
                select(reviews.c.reviewer, func.count(),
                       func.count().filter(reviews.c.completed_at >= hour_ago),
                       func.min(reviews.c.completed_at), func.max(reviews.c.completed_at))
                .where(reviews.c.queue_id == queue_id, reviews.c.status == "completed",
                       reviews.c.completed_at >= day_ago)
                .group_by(reviews.c.reviewer))).all(),
            "series": (await s.execute(
                select(func.date_trunc("hour", items.c.completed_at).label("h"), func.count())
                .where(items.c.queue_id == queue_id, items.c.completed_at >= day_ago)
                .group_by(text("1")).order_by(text("1")))).all(),
        }

    async def blind_trace_ids(self, project_id: str, who: str) -> list[str]:
        """Traces of open items in the project's blind queues that are assigned to ``who``, leased by them, or
        that they reviewed (at most 10,000)."""
        held = exists().where(reviews.c.item_id == items.c.id, reviews.c.reviewer == who,
                              reviews.c.status.in_(["in_progress", "completed", "skipped", "flagged"]))
        blind_q = select(queues.c.id).where(queues.c.project_id == project_id, queues.c.blind.is_(True))
        cond = [items.c.project_id == project_id, items.c.status == "PENDING", items.c.trace_id.isnot(None),
                items.c.queue_id.in_(blind_q), or_(held, literal(who) == any_(items.c.assignees))]
        return list((await self.session.execute(
            select(items.c.trace_id).where(*cond).distinct().limit(10_000))).scalars().all())
