"""Routing rules: create, list, update, delete; what a rule would match (preview); and the decision log (what
rules decided about an object, and why)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from queue_router.adapters.unit_of_work import UnitOfWork
from queue_router.application.deps import Deps
from queue_router.application.queues import open_queue_of, queue_of
from queue_router.domain.errors import Invalid, NotFound, not_null
from queue_router.domain.filters import RuleFilter, RuleSet, compile_rules
from queue_router.domain.models import RuleCreate, RulePreview, RuleUpdate
from queue_router.domain.summary import Summary
from tally_shared.contracts.queues import DECISION_OUTCOMES

SCAN_PAGE = 2000


def rule_view(m: Any, today_count: int | None = None) -> dict[str, Any]:
    return {"id": m["id"], "queue_id": m["queue_id"], "name": m["name"], "filter": m["filter"],
            "target": m["target"], "sample_rate": m["sample_rate"], "daily_cap": m["daily_cap"],
            "active": m["active"], "created_by": m["created_by"], "created_at": m["created_at"],
            "updated_at": m["updated_at"], "added_today": today_count or 0}


async def create_rule(deps: Deps, project_id: str, queue_id: str, cmd: RuleCreate, actor: str) -> dict[str, Any]:
    now = deps.clock()
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "queue_id": queue_id, "name": cmd.name,
           "filter": cmd.filter.model_dump(mode="json", exclude_none=True), "target": cmd.target,
           "sample_rate": cmd.sample_rate, "daily_cap": cmd.daily_cap, "active": cmd.active,
           "is_deleted": False, "created_by": actor, "created_at": now, "updated_at": now}
    async with deps.uow() as uow:
        await open_queue_of(uow, project_id, queue_id)
        await uow.rules.add(row)
        await uow.queues.rules_changed(project_id)
        await uow.commit()
    deps.rules.invalidate(project_id)
    return rule_view(row)


async def list_rules(deps: Deps, project_id: str, queue_id: str) -> list[dict[str, Any]]:
    day_start = datetime.combine(deps.clock().date(), datetime.min.time(), UTC)
    async with deps.uow() as uow:
        await queue_of(uow, project_id, queue_id)
        rows = await uow.rules.of_queue(project_id, queue_id)
        added = await uow.rules.added_since(queue_id, [r["id"] for r in rows], day_start)
    return [rule_view(r, added.get(r["id"], 0)) for r in rows]


async def update_rule(deps: Deps, project_id: str, queue_id: str, rule_id: str, cmd: RuleUpdate | None
                      ) -> dict[str, Any] | None:
    """``cmd`` None deletes the rule (kept as a row, so routing decisions still name it)."""
    async with deps.uow() as uow:
        row = await uow.rules.live(project_id, queue_id, rule_id, lock=True)
        if row is None:
            raise NotFound.of("rule", rule_id)
        if cmd is None:
            changes: dict[str, Any] = {"is_deleted": True, "active": False}
        else:
            changes = cmd.model_dump(exclude_unset=True)
            for k in ("name", "filter", "target", "sample_rate", "active"):
                if k in changes and changes[k] is None:
                    raise not_null(k)
            if cmd.filter is not None:
                changes["filter"] = cmd.filter.model_dump(mode="json", exclude_none=True)
        changes["updated_at"] = deps.clock()
        await uow.rules.update(rule_id, changes)
        await uow.queues.rules_changed(project_id)
        await uow.commit()
    deps.rules.invalidate(project_id)
    return None if cmd is None else rule_view({**row, **changes})


def uses_scores(f: RuleFilter) -> bool:
    return any(c.field == "score" for g in f.groups for c in g.conditions)


async def matching(uow: UnitOfWork, project_id: str, ruleset: RuleSet, with_scores: bool, batch: list[Summary]
                   ) -> list[Summary]:
    """The summaries of ``batch`` the rules match (with their automated scores when a rule reads scores)."""
    scores = await uow.summaries.scores([(project_id, s.trace_id) for s in batch]) if with_scores else {}
    return [s for s in batch if ruleset.match(s.view(scores.get((project_id, s.trace_id))))]


async def preview_rule(deps: Deps, project_id: str, queue_id: str, cmd: RulePreview) -> dict[str, Any]:
    """How many traces of the last ``days`` the rule matches (what it would have routed), with the same compiled
    predicates the router uses."""
    ruleset = compile_rules([cmd.filter])
    with_scores = uses_scores(cmd.filter)
    since = deps.clock() - timedelta(days=cmd.days)
    scanned = matched = 0
    objects: set[str] = set()
    async with deps.uow() as uow:
        await queue_of(uow, project_id, queue_id)
        cursor: tuple[datetime, str] | None = None
        while scanned < deps.max_backfill_scan:
            batch, cursor = await uow.summaries.scan(project_id, since, None, cursor, SCAN_PAGE)
            if not batch:
                break
            scanned += len(batch)
            for s in await matching(uow, project_id, ruleset, with_scores, batch):
                matched += 1
                target = s.session_id if cmd.target == "SESSION" else s.trace_id
                if target:
                    objects.add(target)
            if len(batch) < SCAN_PAGE:
                break
    return {"matched": matched, "objects": len(objects), "count": round(len(objects) * cmd.sample_rate),
            "scanned": scanned, "days": cmd.days, "truncated": scanned >= deps.max_backfill_scan}


# ---------------------------------------------------------------------------------------------------------------
# Decision log


def decision_view(d: Any) -> dict[str, Any]:
    return {"id": d.id, "queue_id": d.queue_id, "rule_id": d.rule_id, "rule_name": d.rule_name,
            "object_type": d.object_type, "object_id": d.object_id, "item_id": d.item_id, "outcome": d.outcome,
            "reason": d.reason, "event_id": str(d.event_id) if d.event_id else None, "decided_at": d.decided_at}


def _check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in DECISION_OUTCOMES:
        raise Invalid("validation_error", f"unknown outcome {outcome!r}", [
            {"field": "outcome", "rule": "enum", "message": "one of " + ", ".join(DECISION_OUTCOMES)}])


async def rule_decisions(deps: Deps, project_id: str, queue_id: str, rule_id: str, *, outcome: str | None,
                         page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """What a rule decided about each object it matched, newest first (deleted rules keep their log)."""
    _check_outcome(outcome)
    async with deps.uow() as uow:
        if not await uow.rules.exists(project_id, queue_id, rule_id):
            raise NotFound.of("rule", rule_id)
        rows, total = await uow.decisions.of_rule(project_id, queue_id, rule_id, outcome, page=page, limit=limit)
    return [decision_view(r) for r in rows], total


async def trace_decisions(deps: Deps, project_id: str, trace_id: str, *, evaluate: bool, page: int, limit: int
                          ) -> dict[str, Any]:
    """Every queue decision about a trace (and its session, for session rules); with ``evaluate`` also each
    active rule that does not match the trace as it is now (``no_match``)."""
    async with deps.uow() as uow:
        summary = await uow.summaries.get(project_id, trace_id)
        objects = [("TRACE", trace_id)]
        if summary is not None and summary.session_id:
            objects.append(("SESSION", summary.session_id))
        rows, total = await uow.decisions.of_objects(project_id, objects, page=page, limit=limit)
        no_match: list[dict[str, Any]] = []
        if evaluate and summary is not None and summary.has_trace:
            project = (await deps.rules.get_many(uow.session, {project_id}))[project_id]
            scores = await uow.summaries.scores([(project_id, trace_id)]) if project.uses_scores else {}
            matched = set(project.ruleset.match(summary.view(scores.get((project_id, trace_id)))))
            no_match = [{"queue_id": r.queue_id, "rule_id": r.id, "rule_name": r.name, "outcome": "no_match",
                         "reason": f"rule {r.name!r} does not match the trace as it is now"}
                        for i, r in enumerate(project.rules) if i not in matched]
    return {"trace_id": trace_id, "data": [decision_view(r) for r in rows], "no_match": no_match,
            "evaluated": evaluate and summary is not None,
            "meta": {"page": page, "limit": limit, "total_items": total,
                     "total_pages": (total + limit - 1) // limit}}
