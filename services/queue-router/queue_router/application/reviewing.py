"""Reviewing: leases on review slots, and what a reviewer does with an item.

An item needing N reviewers has N slot rows. ``next_item`` claims the first claimable slot with
``FOR UPDATE SKIP LOCKED`` (``adapters.review_store``): concurrent reviewers skip each other's locked rows, and a
slot whose row changed under a waiting reviewer is re-checked by PostgreSQL against the row's new state, so a slot
is handed out once. The ``reviews`` row (item, reviewer) is the reviewer's claim on the item: its primary key makes
"never twice to the same person" hold even for one reviewer asking twice at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from queue_router.adapters.items_store import event_key, item_ref
from queue_router.adapters.scoring_api import ScoringPort
from queue_router.adapters.unit_of_work import UnitOfWork, UnitOfWorkFactory
from queue_router.application.items import item_out
from queue_router.application.queues import queue_of
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

# ``state <> 'done'`` in the claim steers the planner to the partial index even without statistics; the claim
# transaction runs on connections with these settings (a separate small pool), which costs no extra round trip.
# Its other statements are primary-key lookups, which these settings do not affect.
# synchronous_commit off: a lease is soft state. A database crash can lose the last few milliseconds of leases
# (with their QueueItemLeased outbox rows, in the same transaction), which only returns those slots to the pool;
# completions, skips and flags commit durably on the main pool.
CLAIM_SERVER_SETTINGS = {"enable_sort": "off", "enable_seqscan": "off", "enable_bitmapscan": "off",
                         "synchronous_commit": "off"}


@dataclass
class ReviewDeps:
    uow: UnitOfWorkFactory
    # Units of work on connections that plan the claim query by its index (see ``CLAIM_SERVER_SETTINGS``).
    claim_uow: UnitOfWorkFactory | None = None
    queue_cache_seconds: float = 2.0
    scoring: ScoringPort | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _queues: dict[tuple[str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def forget_queue(self, project_id: str, queue_id: str) -> None:
        self._queues.pop((project_id, queue_id), None)


def reviewer_allowed(queue: dict[str, Any], reviewer: str, email: str | None) -> bool:
    allowed = queue["reviewers"]
    if not allowed:
        return True
    lowered = {a.lower() for a in allowed}
    return reviewer in allowed or reviewer.lower() in lowered or (email is not None and email.lower() in lowered)


class _Retry(Exception):
    """Raised inside the claim's unit of work to roll it back and look again."""


async def next_item(deps: ReviewDeps, project_id: str, queue_id: str, reviewer: str, queue: dict[str, Any]
                    ) -> dict[str, Any] | None:
    for _ in range(8):
        try:
            return await _try_lease(deps, project_id, queue_id, reviewer, queue)
        except _Retry:
            continue
    raise Conflict("conflict", "could not lease an item; try again")


async def _try_lease(deps: ReviewDeps, project_id: str, queue_id: str, reviewer: str, queue: dict[str, Any],
                     item_id: str | None = None) -> dict[str, Any] | None:
    now = deps.clock()
    lease_id = str(uuid.uuid4())
    expires = now + timedelta(seconds=queue["lease_seconds"])
    params = {"queue_id": queue_id, "reviewer": reviewer, "project_id": project_id, "lease_id": lease_id,
              "now": now, "expires": expires}
    async with (deps.claim_uow or deps.uow)() as uow:
        got = await uow.reviews.claim(params, item_id)
        if got is None:
            return None
        row, item = got
        if row.leased == 0:
            # This reviewer took another slot of the same item concurrently; undo and look again.
            raise _Retry
        ref = item_ref(item)
        if row.expired_n:
            uow.publish(make_envelope(
                QueueItemLeaseExpired(item=ref, reviewer=row.expired_reviewer, lease_id=row.expired_lease),
                project=project_id, key=event_key(ref), occurred_at=now))
        uow.publish(make_envelope(
            QueueItemLeased(item=ref, reviewer=reviewer, lease_id=lease_id, expires_at=expires),
            project=project_id, key=event_key(ref), occurred_at=now))
        await uow.commit()
    out = item_out(item, 1)
    out["reviewer_status"] = "in_progress"
    out["blind"] = queue["blind"]
    out["score_configs"] = queue["score_configs"]
    return {"item": out, "lease": {"id": lease_id, "expires_at": expires, "slot": row.claimed_slot}}


async def _held_slot(uow: UnitOfWork, item_id: str, reviewer: str, lease_id: str | None) -> Any:
    slot = await uow.reviews.held_slot(item_id, reviewer)
    if slot is None or (lease_id is not None and slot.lease_id != lease_id):
        raise Conflict("lease_lost", "you hold no lease on this item (it expired and was taken, or was "
                                     "released)", {"field": "lease_id", "rule": "current_lease"})
    return slot


async def _item(uow: UnitOfWork, project_id: str, queue_id: str, item_id: str, *, lock: bool = False
                ) -> dict[str, Any]:
    item = await uow.items.get(project_id, queue_id, item_id, lock=lock)
    if item is None:
        raise NotFound.of("item", item_id)
    return item


def _event(project_id: str, item: dict[str, Any], make: Callable[[Any], Any], now: datetime | None = None
           ) -> Envelope:
    ref = item_ref(item)
    return make_envelope(make(ref), project=project_id, key=event_key(ref), occurred_at=now)


async def check_required_scores(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                                queue: dict[str, Any], creds: dict[str, str], *, via_api_key: bool) -> None:
    """A completion needs a score of every required config on the item's object by the reviewer (or, when an API
    key acts for the reviewer, one the key posted without an author). Scoring is asked directly, so a score posted
    a moment ago counts."""
    required = [c["id"] for c in queue["score_configs"] if c.get("required", True)]
    if not required:
        return
    async with deps.uow() as uow:
        item = await _item(uow, project_id, queue_id, item_id)
    if deps.scoring is None:
        raise Unavailable("scoring_unavailable", "required score configs cannot be checked")
    have = await deps.scoring.scored_configs(creds, object_type=item["object_type"], object_id=item["object_id"],
                                             config_ids=required, reviewer=reviewer, authorless_ok=via_api_key)
    missing = [c for c in required if c not in have]
    if missing:
        raise Invalid("scores_required", "score every required config before completing", [
            {"field": "score_configs", "rule": "required", "config_id": c,
             "message": f"no score of required config {c!r} by {reviewer!r} on this item"} for c in missing])


def _closed(item: dict[str, Any]) -> Conflict:
    return Conflict("item_closed", f"the item is {item['status'].lower()}")


async def complete(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                   lease_id: str | None) -> dict[str, Any]:
    async with deps.uow() as uow:
        item = await _item(uow, project_id, queue_id, item_id, lock=True)
        review = await uow.reviews.review(item_id, reviewer)
        if review is not None and review.status == "completed":
            return item_out(item) | {"reviewer_status": "completed"}
        if item["status"] != "PENDING":
            raise _closed(item)
        slot = await _held_slot(uow, item_id, reviewer, lease_id)
        now = deps.clock()
        await uow.reviews.set_slot(item_id, slot.slot_no, state="done", lease_expires_at=None)
        await uow.reviews.set_review(item_id, reviewer, status="completed", completed_at=now, updated_at=now,
                                     reason=None)
        completions = item["completions"] + 1
        done = completions >= item["reviewers_per_item"]
        changes: dict[str, Any] = {"completions": completions, "updated_at": now}
        if done:
            changes.update(status="COMPLETED", completed_at=now)
        await uow.items.update(item_id, changes)
        item.update(changes)
        uow.publish(_event(project_id, item, lambda ref: QueueItemCompleted(
            item=ref, reviewer=reviewer, item_completed=done), now))
        await uow.commit()
    return item_out(item) | {"reviewer_status": "completed"}


async def give_back(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    lease_id: str | None, *, status: str, reason: str | None) -> dict[str, Any]:
    """skip / flag / release: the reviewer's slot returns to the pool."""
    async with deps.uow() as uow:
        item = await _item(uow, project_id, queue_id, item_id)
        if item["status"] != "PENDING":
            raise _closed(item)
        slot = await _held_slot(uow, item_id, reviewer, lease_id)
        if slot.state == "done":
            raise Conflict("already_completed", "you completed this item already")
        now = deps.clock()
        await uow.reviews.set_slot(item_id, slot.slot_no, state="open", reviewer=None, lease_id=None,
                                   lease_expires_at=None)
        await uow.reviews.set_review(item_id, reviewer, status=status, reason=reason, updated_at=now)
        if status == "released":
            uow.publish(_event(project_id, item, lambda ref: QueueItemReleased(
                item=ref, reviewer=reviewer, lease_id=slot.lease_id), now))
        elif status == "flagged":
            await uow.reviews.add_flag(item_id, now)
            item["flags"] += 1
            uow.publish(_event(project_id, item, lambda ref: QueueItemFlagged(
                item=ref, reviewer=reviewer, reason=reason), now))
        elif status == "skipped":
            uow.publish(_event(project_id, item, lambda ref: QueueItemSkipped(
                item=ref, reviewer=reviewer, reason=reason), now))
        live = await uow.items.live_leases(item_id)
        await uow.commit()
    return item_out(item, live) | {"reviewer_status": "pending" if status == "released" else status}


async def undo_skip(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    queue: dict[str, Any]) -> dict[str, Any]:
    """Take back a skip: the item is offered to the reviewer again, leased to them now when a slot is free."""
    async with deps.uow() as uow:
        item = await _item(uow, project_id, queue_id, item_id)
        if not await uow.reviews.undo_skip(item_id, reviewer, deps.clock()):
            raise Conflict("not_skipped", "you have not skipped this item")
        uow.publish(_event(project_id, item, lambda ref: QueueItemSkipUndone(item=ref, reviewer=reviewer)))
        await uow.commit()
    if item["status"] != "PENDING":
        return {"item": item_out(item) | {"reviewer_status": "pending"}, "lease": None}
    got = None
    for _ in range(8):
        try:
            got = await _try_lease(deps, project_id, queue_id, reviewer, queue, item_id=item_id)
            break
        except _Retry:
            continue
    if got is None:
        async with deps.uow() as uow:
            live = await uow.items.live_leases(item_id)
        return {"item": item_out(item, live) | {"reviewer_status": "pending"}, "lease": None}
    return got


async def expire_leases(uow_factory: UnitOfWorkFactory, limit: int = 500) -> int:
    """Return leases that ran out to the pool, each with a QueueItemLeaseExpired event, so read models stop
    counting them as work in progress. Returns how many were expired."""
    async with uow_factory() as uow:
        rows = await uow.reviews.expire(limit)
        for m in rows:
            ref = item_ref(m)
            uow.publish(make_envelope(QueueItemLeaseExpired(item=ref, reviewer=m["reviewer"], lease_id=m["lease_id"]),
                                      project=m["project_id"], key=event_key(ref)))
        await uow.commit()
    return len(rows)


async def heartbeat(deps: ReviewDeps, project_id: str, queue_id: str, item_id: str, reviewer: str,
                    lease_id: str | None, lease_seconds: int) -> dict[str, Any]:
    async with deps.uow() as uow:
        await _item(uow, project_id, queue_id, item_id)
        slot = await _held_slot(uow, item_id, reviewer, lease_id)
        if slot.state != "leased":
            raise Conflict("already_completed", "you completed this item already")
        expires = deps.clock() + timedelta(seconds=lease_seconds)
        await uow.reviews.set_slot(item_id, slot.slot_no, lease_expires_at=expires)
        await uow.commit()
    return {"lease": {"id": slot.lease_id, "expires_at": expires, "slot": slot.slot_no}}


_REVIEW_STATUSES = ("in_progress", "completed", "skipped", "flagged", "released", "expired")
_ITEM_STATES = ("PENDING", "SKIPPED", "IN_PROGRESS", "COMPLETED", "REMOVED")


async def progress(deps: ReviewDeps, project_id: str, queue_id: str) -> dict[str, Any]:
    now = deps.clock()
    async with deps.uow() as uow:
        queue = await queue_of(uow, project_id, queue_id)
        got = await uow.reviews.progress(queue_id, now - timedelta(hours=1), now - timedelta(hours=24))
    reviewers: dict[str, dict[str, Any]] = {}
    for r, st, n in got["per_reviewer"]:
        d = reviewers.setdefault(r, {"reviewer": r, "counts": dict.fromkeys(_REVIEW_STATUSES, 0),
                                     "completed_last_hour": 0, "completed_per_hour_24h": 0.0})
        d["counts"][st] = n
    for r, n24, n1, first, last in got["hourly"]:
        d = reviewers[r]
        d["completed_last_hour"] = n1
        # Rate over the span this reviewer actually worked in the last day (at least one hour).
        span_h = max(1.0, (last - first).total_seconds() / 3600) if first and last else 1.0
        d["completed_per_hour_24h"] = round(n24 / span_h, 2)
    counts = {k: int(got["by_status"].get(k, 0)) for k in _ITEM_STATES}
    total = sum(v for k, v in counts.items() if k != "REMOVED")
    return {
        "queue_id": queue_id, "reviewers_per_item": queue["reviewers_per_item"],
        "items": {"total": total, **{k.lower(): v for k, v in counts.items()}},
        "completed_fraction": round(counts["COMPLETED"] / total, 4) if total else 0.0,
        "items_completed_last_hour": got["items_done_hour"],
        "items_completed_per_hour": [{"hour": h, "completed": n} for h, n in got["series"]],
        "reviewers": sorted(reviewers.values(), key=lambda d: d["reviewer"]),
    }


async def queue_for_review(deps: ReviewDeps, project_id: str, queue_id: str) -> dict[str, Any]:
    """The queue's settings, cached for a moment: every next-item call needs them, and they rarely change."""
    now = time.monotonic()
    hit = deps._queues.get((project_id, queue_id))
    if hit is not None and hit[0] > now:
        q = hit[1]
    else:
        async with deps.uow() as uow:
            q = await queue_of(uow, project_id, queue_id)
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
    async with deps.uow() as uow:
        rows = await uow.reviews.blind_trace_ids(p.project_id, p.user_id)
    return {"blind": True, "user_id": p.user_id, "trace_ids": sorted(rows)}
