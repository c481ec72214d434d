"""Queues, rules and items: commands from the HTTP API. Every change to queues or rules bumps the project's rule
version (so routers recompile) and writes its event to the outbox, in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from queue_router.adapters.items_store import NewItem, event_key, existing_items, insert_items, item_ref
from queue_router.adapters.outbox import enqueue
from queue_router.adapters.rule_cache import RuleCache, bump_version
from queue_router.adapters.scoring_api import ScoringPort
from queue_router.adapters.tables import (
    item_slots,
    items,
    queues,
    reviews,
    routing_decisions,
    rules,
    trace_summaries,
)
from queue_router.application.routing import load_scores, summary_from_row
from queue_router.domain.filters import compile_rules
from queue_router.domain.models import (
    Backfill,
    ItemsAdd,
    QueueCreate,
    QueueUpdate,
    RuleCreate,
    RulePreview,
    RuleUpdate,
)
from queue_router.domain.sampling import sampled_in
from queue_router.domain.summary import Summary
from tally_shared.envelope import make_envelope
from tally_shared.events.queues import QueueCreated, QueueData, QueueItemRemoved, QueueUpdated
from tally_shared.http import ApiError
from tally_shared.identity.store import IdentityStore


@dataclass
class Deps:
    sessions: async_sessionmaker[AsyncSession]
    rules: RuleCache
    max_backfill_scan: int = 200_000
    scoring: ScoringPort | None = None
    identity: IdentityStore | None = None


@dataclass
class Caller:
    """Who asks, as other services need to see them: scoring is asked with these credentials."""

    creds: dict[str, str]


async def check_score_configs(deps: Deps, caller: Caller, configs: list[dict[str, Any]],
                              known: set[str] | frozenset[str] = frozenset()) -> None:
    """Every config a queue names exists in the project (configs already on the queue are not asked again)."""
    ids = [c["id"] for c in configs if c["id"] not in known]
    if not ids:
        return
    if deps.scoring is None:
        raise ApiError(503, "scoring_unavailable", "score configs cannot be checked")
    missing = await deps.scoring.missing_configs(caller.creds, ids)
    if missing:
        raise ApiError(422, "validation_error", "unknown or archived score configs", [
            {"field": "score_configs", "rule": "exists", "config_id": c,
             "message": f"no active score config {c!r} in this project"} for c in missing])


async def canonical_reviewers(deps: Deps, project_id: str, reviewers: list[str]) -> list[str]:
    """Reviewers as user ids: an email names the member it belongs to; everyone must be a project member whose
    role may review. One person is one entry, however they were named."""
    if not reviewers:
        return []
    if deps.identity is None:
        raise ApiError(503, "identity_unavailable", "reviewers cannot be checked")
    out: list[str] = []
    problems: list[dict[str, Any]] = []
    for name in reviewers:
        user = (await deps.identity.get_user_by_email(name) if "@" in name
                else await deps.identity.get_user(name))
        role = await deps.identity.role_of(user.id, project_id) if user else None
        if user is None or role is None:
            problems.append({"field": "reviewers", "rule": "member", "value": name,
                             "message": f"{name!r} is not a member of this project"})
        elif role == "viewer":
            problems.append({"field": "reviewers", "rule": "can_review", "value": name,
                             "message": f"{name!r} is a viewer, who cannot review"})
        else:
            out.append(user.id)
    if problems:
        raise ApiError(422, "validation_error", "every reviewer must be a project member who may review", problems)
    return list(dict.fromkeys(out))


def _now() -> datetime:
    return datetime.now(UTC)


def queue_view(row: Any) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    return {"id": m["id"], "project_id": m["project_id"], "name": m["name"], "description": m["description"],
            "score_configs": m["score_configs"], "reviewers": m["reviewers"],
            "reviewers_per_item": m["reviewers_per_item"], "lease_seconds": m["lease_seconds"],
            "blind": m["blind"], "is_archived": m["is_archived"], "created_by": m["created_by"],
            "created_at": m["created_at"], "updated_at": m["updated_at"]}


def _queue_data(q: dict[str, Any]) -> QueueData:
    return QueueData(id=q["id"], name=q["name"], description=q["description"],
                     score_config_ids=[c["id"] for c in q["score_configs"]],
                     reviewers_per_item=q["reviewers_per_item"], blind=q["blind"], is_archived=q["is_archived"])


async def get_queue_row(session: AsyncSession, project_id: str, queue_id: str, *, lock: bool = False
                        ) -> dict[str, Any]:
    stmt = select(queues).where(queues.c.id == queue_id, queues.c.project_id == project_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    if row is None:
        raise ApiError(404, "not_found", f"queue {queue_id!r} not found")
    return dict(row._mapping)


async def create_queue(deps: Deps, project_id: str, cmd: QueueCreate, actor: str, caller: Caller
                       ) -> dict[str, Any]:
    now = _now()
    configs = list({c.id: c.model_dump() for c in cmd.score_configs}.values())
    await check_score_configs(deps, caller, configs)
    reviewers = await canonical_reviewers(deps, project_id, cmd.reviewers)
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "name": cmd.name, "description": cmd.description,
           "score_configs": configs, "reviewers": reviewers,
           "reviewers_per_item": cmd.reviewers_per_item, "lease_seconds": cmd.lease_seconds, "blind": cmd.blind,
           "is_archived": False, "created_by": actor, "created_at": now, "updated_at": now}
    async with deps.sessions() as session, session.begin():
        clash = (await session.execute(select(queues.c.id).where(
            queues.c.project_id == project_id, queues.c.name == cmd.name))).first()
        if clash:
            raise ApiError(409, "conflict", f"a queue named {cmd.name!r} already exists",
                           {"field": "name", "rule": "unique"})
        await session.execute(queues.insert().values(**row))
        await enqueue(session, [make_envelope(QueueCreated(queue=_queue_data(row)), project=project_id,
                                              key=row["id"], occurred_at=now)])
    return queue_view(row)


async def list_queues(deps: Deps, project_id: str, *, include_archived: bool, page: int, limit: int
                      ) -> tuple[list[dict[str, Any]], int]:
    cond = [queues.c.project_id == project_id]
    if not include_archived:
        cond.append(queues.c.is_archived.is_(False))
    async with deps.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(queues).where(*cond))).scalar_one()
        rows = (await session.execute(select(queues).where(*cond).order_by(queues.c.created_at, queues.c.id)
                                      .offset((page - 1) * limit).limit(limit))).all()
    return [queue_view(r) for r in rows], int(total)


async def get_queue(deps: Deps, project_id: str, queue_id: str) -> dict[str, Any]:
    async with deps.sessions() as session:
        return queue_view(await get_queue_row(session, project_id, queue_id))


async def update_queue(deps: Deps, project_id: str, queue_id: str, changes: dict[str, Any],
                       *, archive: bool = False, caller: Caller | None = None) -> dict[str, Any]:
    if "score_configs" in changes:
        async with deps.sessions() as session:
            current = await get_queue_row(session, project_id, queue_id)
        changes["score_configs"] = list({c["id"]: c for c in changes["score_configs"]}.values())
        await check_score_configs(deps, caller or Caller({}), changes["score_configs"],
                                  {c["id"] for c in current["score_configs"]})
    if "reviewers" in changes:
        changes["reviewers"] = await canonical_reviewers(deps, project_id, changes["reviewers"])
    async with deps.sessions() as session, session.begin():
        q = await get_queue_row(session, project_id, queue_id, lock=True)
        if "name" in changes and changes["name"] != q["name"]:
            clash = (await session.execute(select(queues.c.id).where(
                queues.c.project_id == project_id, queues.c.name == changes["name"]))).first()
            if clash:
                raise ApiError(409, "conflict", f"a queue named {changes['name']!r} already exists",
                               {"field": "name", "rule": "unique"})
        if archive:
            changes = {"is_archived": True}
        changes = {**changes, "updated_at": _now()}
        await session.execute(update(queues).where(queues.c.id == queue_id).values(**changes))
        q.update(changes)
        await bump_version(session, project_id)
        await enqueue(session, [make_envelope(QueueUpdated(queue=_queue_data(q)), project=project_id,
                                              key=queue_id)])
    deps.rules.invalidate(project_id)
    return queue_view(q)


def queue_changes(cmd: QueueUpdate) -> dict[str, Any]:
    out = cmd.model_dump(exclude_unset=True)
    if "score_configs" in out and out["score_configs"] is not None:
        out["score_configs"] = [dict(c) for c in out["score_configs"]]
    for k in ("name", "score_configs", "reviewers", "reviewers_per_item", "lease_seconds", "blind"):
        if k in out and out[k] is None:
            raise ApiError(422, "validation_error", f"{k} cannot be null", [{"field": k, "rule": "not_null",
                                                                             "message": "cannot be null"}])
    if "reviewers" in out:
        out["reviewers"] = list(dict.fromkeys(out["reviewers"]))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Rules


def rule_view(row: Any, today_count: int | None = None) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    return {"id": m["id"], "queue_id": m["queue_id"], "name": m["name"], "filter": m["filter"],
            "target": m["target"], "sample_rate": m["sample_rate"], "daily_cap": m["daily_cap"],
            "active": m["active"], "created_by": m["created_by"], "created_at": m["created_at"],
            "updated_at": m["updated_at"], "added_today": today_count or 0}


async def create_rule(deps: Deps, project_id: str, queue_id: str, cmd: RuleCreate, actor: str) -> dict[str, Any]:
    now = _now()
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "queue_id": queue_id, "name": cmd.name,
           "filter": cmd.filter.model_dump(mode="json", exclude_none=True), "target": cmd.target,
           "sample_rate": cmd.sample_rate, "daily_cap": cmd.daily_cap, "active": cmd.active,
           "is_deleted": False, "created_by": actor, "created_at": now, "updated_at": now}
    async with deps.sessions() as session, session.begin():
        q = await get_queue_row(session, project_id, queue_id)
        if q["is_archived"]:
            raise ApiError(409, "queue_archived", "the queue is archived")
        await session.execute(rules.insert().values(**row))
        await bump_version(session, project_id)
    deps.rules.invalidate(project_id)
    return rule_view(row)


async def list_rules(deps: Deps, project_id: str, queue_id: str) -> list[dict[str, Any]]:
    day_start = datetime.combine(_now().date(), datetime.min.time(), UTC)
    async with deps.sessions() as session:
        await get_queue_row(session, project_id, queue_id)
        rows = (await session.execute(
            select(rules).where(rules.c.queue_id == queue_id, rules.c.project_id == project_id,
                                rules.c.is_deleted.is_(False))
            .order_by(rules.c.created_at, rules.c.id))).all()
        # Items each rule added since midnight UTC, capped or not (capped rules also keep a daily counter, which
        # serialises their routers; uncapped rules are counted from the items themselves).
        added: dict[str, int] = dict((await session.execute(
            select(items.c.rule_id, func.count()).where(
                items.c.queue_id == queue_id, items.c.rule_id.in_([r.id for r in rows]),
                items.c.created_at >= day_start).group_by(items.c.rule_id))).all()) if rows else {}
    return [rule_view(r, added.get(r.id, 0)) for r in rows]


async def update_rule(deps: Deps, project_id: str, queue_id: str, rule_id: str, cmd: RuleUpdate | None
                      ) -> dict[str, Any] | None:
    """``cmd`` None deletes the rule (kept as a row, so routing decisions still name it)."""
    async with deps.sessions() as session, session.begin():
        row = (await session.execute(select(rules).where(
            rules.c.id == rule_id, rules.c.queue_id == queue_id, rules.c.project_id == project_id,
            rules.c.is_deleted.is_(False)).with_for_update())).first()
        if row is None:
            raise ApiError(404, "not_found", f"rule {rule_id!r} not found")
        if cmd is None:
            changes: dict[str, Any] = {"is_deleted": True, "active": False}
        else:
            changes = cmd.model_dump(exclude_unset=True)
            for k in ("name", "filter", "target", "sample_rate", "active"):
                if k in changes and changes[k] is None:
                    raise ApiError(422, "validation_error", f"{k} cannot be null",
                                   [{"field": k, "rule": "not_null", "message": "cannot be null"}])
            if cmd.filter is not None:
                changes["filter"] = cmd.filter.model_dump(mode="json", exclude_none=True)
        changes["updated_at"] = _now()
        await session.execute(update(rules).where(rules.c.id == rule_id).values(**changes))
        await bump_version(session, project_id)
        new = {**dict(row._mapping), **changes}
    deps.rules.invalidate(project_id)
    return None if cmd is None else rule_view(new)


# ---------------------------------------------------------------------------------------------------------------
# Items


def item_status(m: Any, live_leases: int = 0) -> str:
    if m["status"] != "PENDING":
        return str(m["status"])
    return "IN_PROGRESS" if live_leases or m["completions"] else "PENDING"


async def live_leases(session: AsyncSession, item_id: str) -> int:
    """Unexpired leases on the item's slots (another reviewer still holding one keeps it IN_PROGRESS)."""
    return int((await session.execute(select(func.count()).select_from(item_slots).where(
        item_slots.c.item_id == item_id, item_slots.c.state == "leased",
        item_slots.c.lease_expires_at > func.now()))).scalar_one())


async def add_items(deps: Deps, project_id: str, queue_id: str, cmd: ItemsAdd, actor: str) -> dict[str, Any]:
    async with deps.sessions() as session, session.begin():
        q = await get_queue_row(session, project_id, queue_id)
        if q["is_archived"]:
            raise ApiError(409, "queue_archived", "the queue is archived")
        specs = list({(s.object_type, s.object_id): s for s in cmd.items}.values())
        existing = await existing_items(session, [(queue_id, s.object_type, s.object_id) for s in specs])
        new = [NewItem(project_id=project_id, queue_id=queue_id, object_type=s.object_type, object_id=s.object_id,
                       trace_id=s.trace_id or (s.object_id if s.object_type == "TRACE" else None),
                       reviewers_per_item=q["reviewers_per_item"], reason=f"added by {actor}", added_by=actor,
                       assignees=cmd.assignees or None)
               for s in specs if (queue_id, s.object_type, s.object_id) not in existing]
        done = await insert_items(session, new)
    return {
        "added": [item_out(row) for _, row in done],
        "already_present": [{"object_type": k[1], "object_id": k[2]} for k, st in existing.items()
                            if st != "REMOVED"],
        "previously_removed": [{"object_type": k[1], "object_id": k[2]} for k, st in existing.items()
                               if st == "REMOVED"],
    }


def item_out(m: Any, live_leases: int = 0) -> dict[str, Any]:
    return {"id": m["id"], "queue_id": m["queue_id"], "object_type": m["object_type"],
            "object_id": m["object_id"], "trace_id": m["trace_id"], "status": item_status(m, live_leases),
            "reviewers_per_item": m["reviewers_per_item"], "completions": m["completions"],
            "flags": m["flags"], "assignees": m["assignees"], "rule_id": m["rule_id"], "reason": m["reason"],
            "added_by": m["added_by"], "created_at": m["created_at"], "updated_at": m["updated_at"],
            "completed_at": m["completed_at"], "removed_at": m.get("removed_at")}


_LIVE_LEASES = (
    select(func.count()).select_from(item_slots)
    .where(item_slots.c.item_id == items.c.id, item_slots.c.state == "leased",
           item_slots.c.lease_expires_at > func.now())
    .correlate(items).scalar_subquery()
)


async def list_items(deps: Deps, project_id: str, queue_id: str, *, status: str | None, reviewer: str | None,
                     page: int, limit: int, langfuse_pending: bool = False,
                     object_ref: tuple[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    cond: list[Any] = [items.c.queue_id == queue_id, items.c.project_id == project_id]
    if object_ref is not None:
        cond += [items.c.object_type == object_ref[0], items.c.object_id == object_ref[1]]
    st = status.upper() if status else None
    my: Any = None
    mine: Any = None
    if reviewer is not None:
        mine = reviews.alias("mine")
        my = mine.c.status
    if my is not None and st is not None and "," in st:
        wanted = [x.strip().lower() for x in st.split(",") if x.strip()]
        if not set(wanted) <= {"in_progress", "completed", "skipped", "flagged"}:
            raise _bad_status(st)
        cond.append(my.in_(wanted))
    elif my is not None and st is not None:
        if st == "PENDING":
            cond += [items.c.status == "PENDING", or_(my.is_(None), my.in_(["released", "expired"]))]
        elif st in ("IN_PROGRESS", "COMPLETED", "SKIPPED", "FLAGGED"):
            cond.append(my == st.lower())
        else:
            raise _bad_status(st)
    elif st is not None:
        if st in ("COMPLETED", "REMOVED"):
            cond.append(items.c.status == st)
        elif st == "PENDING" and langfuse_pending:
            cond.append(items.c.status == "PENDING")
        elif st == "PENDING":
            cond += [items.c.status == "PENDING", items.c.completions == 0, _LIVE_LEASES == 0]
        elif st == "IN_PROGRESS":
            cond += [items.c.status == "PENDING", or_(items.c.completions > 0, _LIVE_LEASES > 0)]
        else:
            raise _bad_status(st)
    else:
        cond.append(items.c.status != "REMOVED")
    cols: list[Any] = [items, _LIVE_LEASES.label("live")]
    source: Any = items
    order: list[Any] = [items.c.created_at, items.c.id]
    if mine is not None:
        # The reviewer's own review of each item (one row at most: its key is item and reviewer).
        source = items.outerjoin(mine, and_(mine.c.item_id == items.c.id, mine.c.reviewer == reviewer))
        cols += [mine.c.status.label("my_status"), mine.c.reason.label("my_reason"),
                 mine.c.updated_at.label("my_updated_at"), mine.c.completed_at.label("my_completed_at")]
    async with deps.sessions() as session:
        await get_queue_row(session, project_id, queue_id)
        total = (await session.execute(select(func.count()).select_from(source).where(*cond))).scalar_one()
        rows = (await session.execute(select(*cols).select_from(source).where(*cond).order_by(*order)
                                      .offset((page - 1) * limit).limit(limit))).all()
    out = []
    for r in rows:
        d = item_out(r._mapping, r.live)
        if mine is not None:
            d["reviewer_status"] = _reviewer_status(r.my_status)
            d["reviewer_reason"] = r.my_reason
            d["reviewer_updated_at"] = r.my_updated_at
            d["reviewer_completed_at"] = r.my_completed_at
        out.append(d)
    return out, int(total)


def _reviewer_status(s: str | None) -> str:
    return "pending" if s in (None, "released", "expired") else str(s)


def _bad_status(st: str) -> ApiError:
    return ApiError(422, "validation_error", f"unknown status {st!r}",
                    [{"field": "status", "rule": "enum", "message":
                      "one of pending, in_progress, completed, removed (skipped, flagged with reviewer)"}])


async def get_item(deps: Deps, project_id: str, queue_id: str, item_id: str) -> dict[str, Any]:
    async with deps.sessions() as session:
        row = (await session.execute(select(items, _LIVE_LEASES.label("live")).where(
            items.c.id == item_id, items.c.queue_id == queue_id, items.c.project_id == project_id))).first()
        if row is None:
            raise ApiError(404, "not_found", f"item {item_id!r} not found")
        out = item_out(row._mapping, row.live)
        revs = (await session.execute(select(reviews).where(reviews.c.item_id == item_id)
                                      .order_by(reviews.c.started_at))).all()
        decisions = (await session.execute(
            select(routing_decisions, rules.c.name.label("rule_name"))
            .outerjoin(rules, rules.c.id == routing_decisions.c.rule_id)
            .where(routing_decisions.c.queue_id == queue_id,
                   routing_decisions.c.object_type == out["object_type"],
                   routing_decisions.c.object_id == out["object_id"])
            .order_by(routing_decisions.c.id))).all()
        slots = (await session.execute(select(item_slots).where(item_slots.c.item_id == item_id)
                                       .order_by(item_slots.c.slot_no))).all()
    out["reviews"] = [{"reviewer": r.reviewer, "status": _reviewer_status(r.status), "reason": r.reason,
                       "started_at": r.started_at, "updated_at": r.updated_at, "completed_at": r.completed_at}
                      for r in revs]
    out["slots"] = [{"slot": s.slot_no, "state": s.state, "reviewer": s.reviewer,
                     "lease_expires_at": s.lease_expires_at} for s in slots]
    out["routing_decisions"] = [{"rule_id": d.rule_id, "rule_name": d.rule_name, "outcome": d.outcome,
                                 "reason": d.reason, "event_id": str(d.event_id) if d.event_id else None,
                                 "decided_at": d.decided_at} for d in decisions]
    return out


async def remove_item(deps: Deps, project_id: str, queue_id: str, item_id: str, actor: str) -> dict[str, Any]:
    async with deps.sessions() as session, session.begin():
        row = (await session.execute(select(items).where(
            items.c.id == item_id, items.c.queue_id == queue_id, items.c.project_id == project_id)
            .with_for_update())).first()
        if row is None:
            raise ApiError(404, "not_found", f"item {item_id!r} not found")
        m = dict(row._mapping)
        if m["status"] == "REMOVED":
            return item_out(m)
        now = _now()
        # The row stays as a tombstone: rules check it and never add the object again.
        await session.execute(update(items).where(items.c.id == item_id).values(
            status="REMOVED", removed_at=now, removed_by=actor, updated_at=now))
        await session.execute(delete(item_slots).where(item_slots.c.item_id == item_id))
        await session.execute(update(reviews).where(reviews.c.item_id == item_id,
                                                    reviews.c.status == "in_progress")
                              .values(status="released", updated_at=now))
        m.update(status="REMOVED", removed_at=now, removed_by=actor, updated_at=now)
        ref = item_ref(m)
        await enqueue(session, [make_envelope(QueueItemRemoved(item=ref, removed_by=actor), project=project_id,
                                              key=event_key(ref), occurred_at=now)])
    return item_out(m)


async def set_item_status(deps: Deps, project_id: str, queue_id: str, item_id: str, status: str
                          ) -> dict[str, Any]:
    """Langfuse's PATCH status: COMPLETED closes an item by hand, PENDING reopens it for one more review."""
    async with deps.sessions() as session, session.begin():
        row = (await session.execute(select(items).where(
            items.c.id == item_id, items.c.queue_id == queue_id, items.c.project_id == project_id)
            .with_for_update())).first()
        if row is None or row.status == "REMOVED":
            raise ApiError(404, "not_found", f"item {item_id!r} not found")
        m = dict(row._mapping)
        now = _now()
        if status == "COMPLETED" and m["status"] != "COMPLETED":
            await session.execute(delete(item_slots).where(item_slots.c.item_id == item_id,
                                                           item_slots.c.state != "done"))
            await session.execute(update(reviews).where(reviews.c.item_id == item_id,
                                                        reviews.c.status == "in_progress")
                                  .values(status="released", updated_at=now))
            changes: dict[str, Any] = {"status": "COMPLETED", "completed_at": now, "updated_at": now}
        elif status == "PENDING" and m["status"] == "COMPLETED":
            done = (await session.execute(select(func.count()).select_from(item_slots).where(
                item_slots.c.item_id == item_id))).scalar_one()
            need = max(1, m["reviewers_per_item"] - int(done))
            await session.execute(item_slots.insert(), [
                {"item_id": item_id, "slot_no": int(done) + i, "queue_id": queue_id, "state": "open",
                 "assignees": m["assignees"], "item_created_at": m["created_at"]} for i in range(need)])
            changes = {"status": "PENDING", "completed_at": None, "updated_at": now}
        else:
            changes = {}
        if changes:
            await session.execute(update(items).where(items.c.id == item_id).values(**changes))
            m.update(changes)
    return item_out(m)


async def preview_rule(deps: Deps, project_id: str, queue_id: str, cmd: RulePreview) -> dict[str, Any]:
    """How many traces of the last ``days`` the rule matches (what it would have routed), with the same compiled
    predicates the router uses."""
    ruleset = compile_rules([cmd.filter])
    uses_scores = any(c.field == "score" for g in cmd.filter.groups for c in g.conditions)
    since = _now() - timedelta(days=cmd.days)
    when = func.coalesce(trace_summaries.c.timestamp, trace_summaries.c.first_seen_at)
    scanned = matched = 0
    objects: set[str] = set()
    async with deps.sessions() as session:
        await get_queue_row(session, project_id, queue_id)
        cursor: tuple[datetime, str] | None = None
        while scanned < deps.max_backfill_scan:
            cond: list[Any] = [trace_summaries.c.project_id == project_id, trace_summaries.c.has_trace.is_(True),
                               when >= since]
            if cursor is not None:
                cond.append(func.row(when, trace_summaries.c.trace_id) > func.row(*cursor))
            rows = (await session.execute(select(trace_summaries, when.label("w")).where(*cond)
                                          .order_by(when, trace_summaries.c.trace_id).limit(2000))).all()
            if not rows:
                break
            cursor = (rows[-1].w, rows[-1].trace_id)
            scanned += len(rows)
            sums = [summary_from_row(r) for r in rows]
            scores = await load_scores(session, [(project_id, x.trace_id) for x in sums]) if uses_scores else {}
            for x in sums:
                if ruleset.match(x.view(scores.get((project_id, x.trace_id)))):
                    matched += 1
                    target = x.session_id if cmd.target == "SESSION" else x.trace_id
                    if target:
                        objects.add(target)
            if len(rows) < 2000:
                break
    return {"matched": matched, "objects": len(objects), "count": round(len(objects) * cmd.sample_rate),
            "scanned": scanned, "days": cmd.days, "truncated": scanned >= deps.max_backfill_scan}


async def backfill(deps: Deps, project_id: str, queue_id: str, cmd: Backfill, actor: str) -> dict[str, Any]:
    ruleset = compile_rules([cmd.filter])
    uses_scores = any(c.field == "score" for g in cmd.filter.groups for c in g.conditions)
    when = func.coalesce(trace_summaries.c.timestamp, trace_summaries.c.first_seen_at)
    stats = {"scanned": 0, "matched": 0, "added": 0, "already_present": 0, "previously_removed": 0,
             "sampled_out": 0, "truncated": False}
    backfill_id = str(uuid.uuid4())
    reason = f"backfill {backfill_id} by {actor} over traces from {cmd.from_.isoformat()}"
    async with deps.sessions() as session, session.begin():
        q = await get_queue_row(session, project_id, queue_id)
        if q["is_archived"]:
            raise ApiError(409, "queue_archived", "the queue is archived")
        cursor: tuple[datetime, str] | None = None
        page = 2000
        while stats["added"] < cmd.limit:
            if stats["scanned"] >= deps.max_backfill_scan:
                stats["truncated"] = True
                break
            cond: list[Any] = [trace_summaries.c.project_id == project_id, trace_summaries.c.has_trace.is_(True),
                               when >= cmd.from_]
            if cmd.to is not None:
                cond.append(when < cmd.to)
            if cursor is not None:
                cond.append(func.row(when, trace_summaries.c.trace_id) > func.row(*cursor))
            rows = (await session.execute(select(trace_summaries, when.label("w")).where(*cond)
                                          .order_by(when, trace_summaries.c.trace_id).limit(page))).all()
            if not rows:
                break
            cursor = (rows[-1].w, rows[-1].trace_id)
            stats["scanned"] += len(rows)
            sums: list[Summary] = [summary_from_row(r) for r in rows]
            keys = [(project_id, s.trace_id) for s in sums]
            scores = await load_scores(session, keys) if uses_scores else {}
            targets: list[tuple[Summary, str, str]] = []
            for s in sums:
                if not ruleset.match(s.view(scores.get((project_id, s.trace_id)))):
                    continue
                stats["matched"] += 1
                if cmd.target == "SESSION":
                    if s.session_id:
                        targets.append((s, "SESSION", s.session_id))
                else:
                    targets.append((s, "TRACE", s.trace_id))
            existing = await existing_items(session, [(queue_id, ot, oid) for _, ot, oid in targets])
            new: list[NewItem] = []
            for s, ot, oid in targets:
                st = existing.get((queue_id, ot, oid))
                if st == "REMOVED":
                    stats["previously_removed"] += 1
                    continue
                if st is not None:
                    stats["already_present"] += 1
                    continue
                if not sampled_in(backfill_id, oid, cmd.sample_rate):
                    stats["sampled_out"] += 1
                    continue
                if len(new) + stats["added"] >= cmd.limit:
                    break
                new.append(NewItem(project_id=project_id, queue_id=queue_id, object_type=ot, object_id=oid,
                                   trace_id=s.trace_id, reviewers_per_item=q["reviewers_per_item"],
                                   reason=reason, added_by=actor))
            done = await insert_items(session, new)
            stats["already_present"] += len(new) - len(done)
            stats["added"] += len(done)
            if len(rows) < page:
                break
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Decision log


DECISION_OUTCOMES = ("added", "duplicate", "previously_removed", "sampled_out", "cap_reached")


def decision_view(d: Any) -> dict[str, Any]:
    return {"id": d.id, "queue_id": d.queue_id, "rule_id": d.rule_id, "rule_name": d.rule_name,
            "object_type": d.object_type, "object_id": d.object_id, "item_id": d.item_id, "outcome": d.outcome,
            "reason": d.reason, "event_id": str(d.event_id) if d.event_id else None, "decided_at": d.decided_at}


def _outcome_filter(outcome: str | None) -> list[Any]:
    if outcome is None:
        return []
    if outcome not in DECISION_OUTCOMES:
        raise ApiError(422, "validation_error", f"unknown outcome {outcome!r}", [
            {"field": "outcome", "rule": "enum", "message": "one of " + ", ".join(DECISION_OUTCOMES)}])
    return [routing_decisions.c.outcome == outcome]


async def rule_decisions(deps: Deps, project_id: str, queue_id: str, rule_id: str, *, outcome: str | None,
                         page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """What a rule decided about each object it matched, newest first (deleted rules keep their log)."""
    cond = [routing_decisions.c.project_id == project_id, routing_decisions.c.queue_id == queue_id,
            routing_decisions.c.rule_id == rule_id, *_outcome_filter(outcome)]
    async with deps.sessions() as session:
        rule = (await session.execute(select(rules.c.id).where(
            rules.c.id == rule_id, rules.c.queue_id == queue_id, rules.c.project_id == project_id))).first()
        if rule is None:
            raise ApiError(404, "not_found", f"rule {rule_id!r} not found")
        total = (await session.execute(select(func.count()).select_from(routing_decisions).where(*cond))
                 ).scalar_one()
        rows = (await session.execute(
            select(routing_decisions, rules.c.name.label("rule_name"))
            .outerjoin(rules, rules.c.id == routing_decisions.c.rule_id).where(*cond)
            .order_by(routing_decisions.c.id.desc()).offset((page - 1) * limit).limit(limit))).all()
    return [decision_view(r) for r in rows], int(total)


async def trace_decisions(deps: Deps, project_id: str, trace_id: str, *, evaluate: bool, page: int, limit: int
                          ) -> dict[str, Any]:
    """Every queue decision about a trace (and its session, for session rules); with ``evaluate`` also each
    active rule that does not match the trace as it is now (``no_match``)."""
    async with deps.sessions() as session:
        summary_row = (await session.execute(select(trace_summaries).where(
            trace_summaries.c.project_id == project_id, trace_summaries.c.trace_id == trace_id))).first()
        objects = [("TRACE", trace_id)]
        if summary_row is not None and summary_row.session_id:
            objects.append(("SESSION", summary_row.session_id))
        cond = [routing_decisions.c.project_id == project_id,
                or_(*[and_(routing_decisions.c.object_type == ot, routing_decisions.c.object_id == oid)
                      for ot, oid in objects])]
        total = (await session.execute(select(func.count()).select_from(routing_decisions).where(*cond))
                 ).scalar_one()
        rows = (await session.execute(
            select(routing_decisions, rules.c.name.label("rule_name"))
            .outerjoin(rules, rules.c.id == routing_decisions.c.rule_id).where(*cond)
            .order_by(routing_decisions.c.id.desc()).offset((page - 1) * limit).limit(limit))).all()
        no_match: list[dict[str, Any]] = []
        if evaluate and summary_row is not None and summary_row.has_trace:
            s = summary_from_row(summary_row)
            project = (await deps.rules.get_many(session, {project_id}))[project_id]
            scores = await load_scores(session, [(project_id, trace_id)]) if project.uses_scores else {}
            matched = set(project.ruleset.match(s.view(scores.get((project_id, trace_id)))))
            no_match = [{"queue_id": r.queue_id, "rule_id": r.id, "rule_name": r.name, "outcome": "no_match",
                         "reason": f"rule {r.name!r} does not match the trace as it is now"}
                        for i, r in enumerate(project.rules) if i not in matched]
    return {"trace_id": trace_id, "data": [decision_view(r) for r in rows], "no_match": no_match,
            "evaluated": evaluate and summary_row is not None,
            "meta": {"page": page, "limit": limit, "total_items": int(total),
                     "total_pages": (int(total) + limit - 1) // limit}}
