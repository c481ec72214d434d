"""Queues: create, list, read, update, archive. Every change bumps the project's rule version (routers
recompile) and publishes its event, in the same unit of work."""

from __future__ import annotations

import uuid
from typing import Any

from queue_router.adapters.unit_of_work import UnitOfWork
from queue_router.application.deps import Caller, Deps
from queue_router.domain.errors import Conflict, Invalid, NotFound, Unavailable, not_null
from queue_router.domain.models import QueueCreate, QueueUpdate
from tally_shared.envelope import make_envelope
from tally_shared.events.queues import QueueCreated, QueueData, QueueUpdated


def queue_view(m: Any) -> dict[str, Any]:
    return {"id": m["id"], "project_id": m["project_id"], "name": m["name"], "description": m["description"],
            "score_configs": m["score_configs"], "reviewers": m["reviewers"],
            "reviewers_per_item": m["reviewers_per_item"], "lease_seconds": m["lease_seconds"],
            "blind": m["blind"], "is_archived": m["is_archived"], "created_by": m["created_by"],
            "created_at": m["created_at"], "updated_at": m["updated_at"]}


def _queue_data(q: dict[str, Any]) -> QueueData:
    return QueueData(id=q["id"], name=q["name"], description=q["description"],
                     score_config_ids=[c["id"] for c in q["score_configs"]],
                     reviewers_per_item=q["reviewers_per_item"], blind=q["blind"], is_archived=q["is_archived"])


async def queue_of(uow: UnitOfWork, project_id: str, queue_id: str, *, lock: bool = False) -> dict[str, Any]:
    q = await uow.queues.get(project_id, queue_id, lock=lock)
    if q is None:
        raise NotFound.of("queue", queue_id)
    return q


async def open_queue_of(uow: UnitOfWork, project_id: str, queue_id: str) -> dict[str, Any]:
    """The queue, which must not be archived (nothing is added to an archived queue)."""
    q = await queue_of(uow, project_id, queue_id)
    if q["is_archived"]:
        raise Conflict("queue_archived", "the queue is archived")
    return q


async def check_score_configs(deps: Deps, caller: Caller, configs: list[dict[str, Any]],
                              known: set[str] | frozenset[str] = frozenset()) -> None:
    """Every config a queue names exists in the project (configs already on the queue are not asked again)."""
    ids = [c["id"] for c in configs if c["id"] not in known]
    if not ids:
        return
    if deps.scoring is None:
        raise Unavailable("scoring_unavailable", "score configs cannot be checked")
    missing = await deps.scoring.missing_configs(caller.creds, ids)
    if missing:
        raise Invalid("validation_error", "unknown or archived score configs", [
            {"field": "score_configs", "rule": "exists", "config_id": c,
             "message": f"no active score config {c!r} in this project"} for c in missing])


async def canonical_reviewers(deps: Deps, project_id: str, reviewers: list[str]) -> list[str]:
    """Reviewers as user ids: an email names the member it belongs to; everyone must be a project member whose
    role may review. One person is one entry, however they were named."""
    if not reviewers:
        return []
    if deps.identity is None:
        raise Unavailable("identity_unavailable", "reviewers cannot be checked")
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
        raise Invalid("validation_error", "every reviewer must be a project member who may review", problems)
    return list(dict.fromkeys(out))


def _name_taken(name: str) -> Conflict:
    return Conflict("conflict", f"a queue named {name!r} already exists", {"field": "name", "rule": "unique"})


async def create_queue(deps: Deps, project_id: str, cmd: QueueCreate, actor: str, caller: Caller
                       ) -> dict[str, Any]:
    now = deps.clock()
    configs = list({c.id: c.model_dump() for c in cmd.score_configs}.values())
    await check_score_configs(deps, caller, configs)
    reviewers = await canonical_reviewers(deps, project_id, cmd.reviewers)
    row = {"id": str(uuid.uuid4()), "project_id": project_id, "name": cmd.name, "description": cmd.description,
           "score_configs": configs, "reviewers": reviewers,
           "reviewers_per_item": cmd.reviewers_per_item, "lease_seconds": cmd.lease_seconds, "blind": cmd.blind,
           "is_archived": False, "created_by": actor, "created_at": now, "updated_at": now}
    async with deps.uow() as uow:
        if await uow.queues.name_taken(project_id, cmd.name):
            raise _name_taken(cmd.name)
        await uow.queues.add(row)
        uow.publish(make_envelope(QueueCreated(queue=_queue_data(row)), project=project_id, key=row["id"],
                                  occurred_at=now))
        await uow.commit()
    return queue_view(row)


async def list_queues(deps: Deps, project_id: str, *, include_archived: bool, page: int, limit: int
                      ) -> tuple[list[dict[str, Any]], int]:
    async with deps.uow() as uow:
        rows, total = await uow.queues.page(project_id, include_archived=include_archived, page=page, limit=limit)
    return [queue_view(r) for r in rows], total


async def get_queue(deps: Deps, project_id: str, queue_id: str) -> dict[str, Any]:
    async with deps.uow() as uow:
        return queue_view(await queue_of(uow, project_id, queue_id))


async def update_queue(deps: Deps, project_id: str, queue_id: str, changes: dict[str, Any],
                       *, archive: bool = False, caller: Caller | None = None) -> dict[str, Any]:
    if "score_configs" in changes:
        async with deps.uow() as uow:
            current = await queue_of(uow, project_id, queue_id)
        changes["score_configs"] = list({c["id"]: c for c in changes["score_configs"]}.values())
        await check_score_configs(deps, caller or Caller({}), changes["score_configs"],
                                  {c["id"] for c in current["score_configs"]})
    if "reviewers" in changes:
        changes["reviewers"] = await canonical_reviewers(deps, project_id, changes["reviewers"])
    async with deps.uow() as uow:
        q = await queue_of(uow, project_id, queue_id, lock=True)
        if "name" in changes and changes["name"] != q["name"] and await uow.queues.name_taken(project_id,
                                                                                              changes["name"]):
            raise _name_taken(changes["name"])
        if archive:
            changes = {"is_archived": True}
        changes = {**changes, "updated_at": deps.clock()}
        await uow.queues.update(queue_id, changes)
        q.update(changes)
        await uow.queues.rules_changed(project_id)
        uow.publish(make_envelope(QueueUpdated(queue=_queue_data(q)), project=project_id, key=queue_id))
        await uow.commit()
    deps.rules.invalidate(project_id)
    return queue_view(q)


def queue_changes(cmd: QueueUpdate) -> dict[str, Any]:
    out = cmd.model_dump(exclude_unset=True)
    if "score_configs" in out and out["score_configs"] is not None:
        out["score_configs"] = [dict(c) for c in out["score_configs"]]
    for k in ("name", "score_configs", "reviewers", "reviewers_per_item", "lease_seconds", "blind"):
        if k in out and out[k] is None:
            raise not_null(k)
    if "reviewers" in out:
        out["reviewers"] = list(dict.fromkeys(out["reviewers"]))
    return out
