"""Items: added by hand or by a backfill over traces already seen, listed, read, removed, and (Langfuse's
PATCH) closed or reopened by hand."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from queue_router.adapters.items_store import NewItem, event_key, item_ref
from queue_router.adapters.stores import BadStatus
from queue_router.application.deps import Deps
from queue_router.application.queues import open_queue_of, queue_of
from queue_router.application.rules import SCAN_PAGE, matching, uses_scores
from queue_router.domain.errors import Invalid, NotFound
from queue_router.domain.filters import compile_rules
from queue_router.domain.models import Backfill, ItemsAdd
from queue_router.domain.sampling import sampled_in
from tally_shared.envelope import make_envelope
from tally_shared.events.queues import QueueItemRemoved


def item_status(m: Any, live_leases: int = 0) -> str:
    if m["status"] != "PENDING":
        return str(m["status"])
    return "IN_PROGRESS" if live_leases or m["completions"] else "PENDING"


def item_out(m: Any, live_leases: int = 0) -> dict[str, Any]:
    return {"id": m["id"], "queue_id": m["queue_id"], "object_type": m["object_type"],
            "object_id": m["object_id"], "trace_id": m["trace_id"], "status": item_status(m, live_leases),
            "reviewers_per_item": m["reviewers_per_item"], "completions": m["completions"],
            "flags": m["flags"], "assignees": m["assignees"], "rule_id": m["rule_id"], "reason": m["reason"],
            "added_by": m["added_by"], "created_at": m["created_at"], "updated_at": m["updated_at"],
            "completed_at": m["completed_at"], "removed_at": m.get("removed_at")}


def reviewer_status(s: str | None) -> str:
    return "pending" if s in (None, "released", "expired") else str(s)


async def add_items(deps: Deps, project_id: str, queue_id: str, cmd: ItemsAdd, actor: str) -> dict[str, Any]:
    async with deps.uow() as uow:
        q = await open_queue_of(uow, project_id, queue_id)
        specs = list({(s.object_type, s.object_id): s for s in cmd.items}.values())
        existing = await uow.items.existing([(queue_id, s.object_type, s.object_id) for s in specs])
        new = [NewItem(project_id=project_id, queue_id=queue_id, object_type=s.object_type, object_id=s.object_id,
                       trace_id=s.trace_id or (s.object_id if s.object_type == "TRACE" else None),
                       reviewers_per_item=q["reviewers_per_item"], reason=f"added by {actor}", added_by=actor,
                       assignees=cmd.assignees or None)
               for s in specs if (queue_id, s.object_type, s.object_id) not in existing]
        done, events = await uow.items.add(new)
        uow.publish(*events)
        await uow.commit()
    return {
        "added": [item_out(row) for _, row in done],
        "already_present": [{"object_type": k[1], "object_id": k[2]} for k, st in existing.items()
                            if st != "REMOVED"],
        "previously_removed": [{"object_type": k[1], "object_id": k[2]} for k, st in existing.items()
                               if st == "REMOVED"],
    }


def _bad_status(st: str) -> Invalid:
    return Invalid("validation_error", f"unknown status {st!r}",
                   [{"field": "status", "rule": "enum", "message":
                     "one of pending, in_progress, completed, removed (skipped, flagged with reviewer)"}])


async def list_items(deps: Deps, project_id: str, queue_id: str, *, status: str | None, reviewer: str | None,
                     page: int, limit: int, langfuse_pending: bool = False,
                     object_ref: tuple[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    async with deps.uow() as uow:
        await queue_of(uow, project_id, queue_id)
        try:
            rows, total = await uow.items.page(project_id, queue_id, status=status, reviewer=reviewer, page=page,
                                               limit=limit, langfuse_pending=langfuse_pending,
                                               object_ref=object_ref)
        except BadStatus as e:
            raise _bad_status(str(e)) from None
    out = []
    for r in rows:
        d = item_out(r._mapping, r.live)
        if reviewer is not None:
            d["reviewer_status"] = reviewer_status(r.my_status)
            d["reviewer_reason"] = r.my_reason
            d["reviewer_updated_at"] = r.my_updated_at
            d["reviewer_completed_at"] = r.my_completed_at
        out.append(d)
    return out, total


async def get_item(deps: Deps, project_id: str, queue_id: str, item_id: str) -> dict[str, Any]:
    async with deps.uow() as uow:
        found = await uow.items.get_with_leases(project_id, queue_id, item_id)
        if found is None:
            raise NotFound.of("item", item_id)
        out = item_out(*found)
        revs = await uow.items.reviews_of(item_id)
        decisions = await uow.decisions.of_item(queue_id, out["object_type"], out["object_id"])
        slots = await uow.items.slots_of(item_id)
    out["reviews"] = [{"reviewer": r.reviewer, "status": reviewer_status(r.status), "reason": r.reason,
                       "started_at": r.started_at, "updated_at": r.updated_at, "completed_at": r.completed_at}
                      for r in revs]
    out["slots"] = [{"slot": s.slot_no, "state": s.state, "reviewer": s.reviewer,
                     "lease_expires_at": s.lease_expires_at} for s in slots]
    out["routing_decisions"] = [{"rule_id": d.rule_id, "rule_name": d.rule_name, "outcome": d.outcome,
                                 "reason": d.reason, "event_id": str(d.event_id) if d.event_id else None,
                                 "decided_at": d.decided_at} for d in decisions]
    return out


async def remove_item(deps: Deps, project_id: str, queue_id: str, item_id: str, actor: str) -> dict[str, Any]:
    async with deps.uow() as uow:
        m = await uow.items.get(project_id, queue_id, item_id, lock=True)
        if m is None:
            raise NotFound.of("item", item_id)
        if m["status"] == "REMOVED":
            return item_out(m)
        now = deps.clock()
        await uow.items.remove(item_id, actor, now)
        m.update(status="REMOVED", removed_at=now, removed_by=actor, updated_at=now)
        ref = item_ref(m)
        uow.publish(make_envelope(QueueItemRemoved(item=ref, removed_by=actor), project=project_id,
                                  key=event_key(ref), occurred_at=now))
        await uow.commit()
    return item_out(m)


async def set_item_status(deps: Deps, project_id: str, queue_id: str, item_id: str, status: str
                          ) -> dict[str, Any]:
    """Langfuse's PATCH status: COMPLETED closes an item by hand, PENDING reopens it for one more review."""
    async with deps.uow() as uow:
        m = await uow.items.get(project_id, queue_id, item_id, lock=True)
        if m is None or m["status"] == "REMOVED":
            raise NotFound.of("item", item_id)
        now = deps.clock()
        changes: dict[str, Any] = {}
        if status == "COMPLETED" and m["status"] != "COMPLETED":
            await uow.items.close_open_slots(item_id)
            await uow.items.release_reviews(item_id, now)
            changes = {"status": "COMPLETED", "completed_at": now, "updated_at": now}
        elif status == "PENDING" and m["status"] == "COMPLETED":
            done = await uow.items.count_slots(item_id)
            await uow.items.add_slots(m, done, max(1, m["reviewers_per_item"] - done))
            changes = {"status": "PENDING", "completed_at": None, "updated_at": now}
        if changes:
            await uow.items.update(item_id, changes)
            m.update(changes)
        await uow.commit()
    return item_out(m)


async def backfill(deps: Deps, project_id: str, queue_id: str, cmd: Backfill, actor: str) -> dict[str, Any]:
    """Items for the traces already seen in [from, to) that the filter matches, up to ``limit``, sampled by the
    backfill's own id; in one unit of work."""
    ruleset = compile_rules([cmd.filter])
    with_scores = uses_scores(cmd.filter)
    stats: dict[str, Any] = {"scanned": 0, "matched": 0, "added": 0, "already_present": 0,
                             "previously_removed": 0, "sampled_out": 0, "truncated": False}
    backfill_id = str(uuid.uuid4())
    reason = f"backfill {backfill_id} by {actor} over traces from {cmd.from_.isoformat()}"
    async with deps.uow() as uow:
        q = await open_queue_of(uow, project_id, queue_id)
        cursor: tuple[datetime, str] | None = None
        while stats["added"] < cmd.limit:
            if stats["scanned"] >= deps.max_backfill_scan:
                stats["truncated"] = True
                break
            batch, cursor = await uow.summaries.scan(project_id, cmd.from_, cmd.to, cursor, SCAN_PAGE)
            if not batch:
                break
            stats["scanned"] += len(batch)
            targets: list[tuple[str, str, str]] = []  # (trace id, object type, object id)
            for s in await matching(uow, project_id, ruleset, with_scores, batch):
                stats["matched"] += 1
                if cmd.target == "SESSION":
                    if s.session_id:
                        targets.append((s.trace_id, "SESSION", s.session_id))
                else:
                    targets.append((s.trace_id, "TRACE", s.trace_id))
            existing = await uow.items.existing([(queue_id, ot, oid) for _, ot, oid in targets])
            new: list[NewItem] = []
            for trace_id, ot, oid in targets:
                st = existing.get((queue_id, ot, oid))
                if st == "REMOVED":
                    stats["previously_removed"] += 1
                elif st is not None:
                    stats["already_present"] += 1
                elif not sampled_in(backfill_id, oid, cmd.sample_rate):
                    stats["sampled_out"] += 1
                elif len(new) + stats["added"] >= cmd.limit:
                    break
                else:
                    new.append(NewItem(project_id=project_id, queue_id=queue_id, object_type=ot, object_id=oid,
                                       trace_id=trace_id, reviewers_per_item=q["reviewers_per_item"],
                                       reason=reason, added_by=actor))
            done, events = await uow.items.add(new)
            uow.publish(*events)
            stats["already_present"] += len(new) - len(done)
            stats["added"] += len(done)
            if len(batch) < SCAN_PAGE:
                break
        await uow.commit()
    return stats
