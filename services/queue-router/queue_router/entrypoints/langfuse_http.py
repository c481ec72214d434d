"""Langfuse-compatible /api/public/annotation-queues, shaped as the langfuse 5.x SDK sends and parses it
(camelCase fields, page/limit pagination with meta.totalItems/totalPages, statuses PENDING and COMPLETED)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from queue_router.adapters.scoring_api import credentials
from queue_router.application import items as app_items
from queue_router.application import queues as app_queues
from queue_router.application.deps import Caller
from queue_router.entrypoints.http import deps, require_configure, review_deps
from tally_shared.contracts.queues import (
    ItemsAdd,
    ItemSpec,
    LfAssignment,
    LfAssignmentPublic,
    LfDeleted,
    LfItem,
    LfItemCreate,
    LfItemPage,
    LfItemUpdate,
    LfQueue,
    LfQueueCreate,
    LfQueuePage,
    QueueCreate,
    ScoreConfigRef,
)
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal

router = APIRouter(prefix="/api/public/annotation-queues", tags=["langfuse-compatible"])


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


def _queue(q: dict[str, Any]) -> dict[str, Any]:
    return {"id": q["id"], "name": q["name"], "description": q["description"],
            "scoreConfigIds": [c["id"] for c in q["score_configs"]],
            "createdAt": _iso(q["created_at"]), "updatedAt": _iso(q["updated_at"])}


def _item(i: dict[str, Any]) -> dict[str, Any]:
    return {"id": i["id"], "queueId": i["queue_id"], "objectId": i["object_id"], "objectType": i["object_type"],
            "status": "COMPLETED" if i["status"] == "COMPLETED" else "PENDING",
            "completedAt": _iso(i["completed_at"]), "createdAt": _iso(i["created_at"]),
            "updatedAt": _iso(i["updated_at"])}


def _meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "totalItems": total, "totalPages": (total + limit - 1) // limit}


@router.get("", response_model=LfQueuePage)
async def list_queues(p: CurrentPrincipal, request: Request, page: int = Query(1, ge=1),
                      limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    data, total = await app_queues.list_queues(deps(request), p.project_id, include_archived=False, page=page,
                                               limit=limit)
    return {"data": [_queue(q) for q in data], "meta": _meta(page, limit, total)}


@router.post("", response_model=LfQueue)
async def create_queue(body: LfQueueCreate, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    cmd = QueueCreate(name=body.name, description=body.description,
                      score_configs=[ScoreConfigRef(id=i, required=True) for i in body.score_config_ids])
    return _queue(await app_queues.create_queue(deps(request), p.project_id, cmd, p.actor,
                                                 Caller(credentials(request.headers))))


@router.get("/{queue_id}", response_model=LfQueue)
async def get_queue(queue_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return _queue(await app_queues.get_queue(deps(request), p.project_id, queue_id))


@router.get("/{queue_id}/items", response_model=LfItemPage)
async def list_items(queue_id: str, p: CurrentPrincipal, request: Request,
                     status: Literal["PENDING", "COMPLETED"] | None = None,
                     page: int = Query(1, ge=1), limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    # Langfuse's PENDING is "not completed yet", which includes items being reviewed right now.
    data, total = await app_items.list_items(
        deps(request), p.project_id, queue_id, status=status, reviewer=None, page=page, limit=limit,
        langfuse_pending=True)
    return {"data": [_item(i) for i in data], "meta": _meta(page, limit, total)}


@router.get("/{queue_id}/items/{item_id}", response_model=LfItem)
async def get_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    item = await app_items.get_item(deps(request), p.project_id, queue_id, item_id)
    if item["status"] == "REMOVED":
        raise ApiError(404, "not_found", f"item {item_id!r} not found")
    return _item(item)


@router.post("/{queue_id}/items", response_model=LfItem)
async def create_item(queue_id: str, body: LfItemCreate, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    d = deps(request)
    res = await app_items.add_items(d, p.project_id, queue_id, ItemsAdd(items=[ItemSpec(
        object_type=body.object_type, object_id=body.object_id)]), p.actor)
    if res["previously_removed"]:
        raise ApiError(409, "previously_removed", "this object was removed from the queue before")
    if res["added"]:
        item = res["added"][0]
    else:
        found, _ = await app_items.list_items(d, p.project_id, queue_id, status=None, reviewer=None, page=1,
                                               limit=1, object_ref=(body.object_type, body.object_id))
        item = found[0]
    if body.status == "COMPLETED":
        item = await app_items.set_item_status(d, p.project_id, queue_id, item["id"], "COMPLETED")
    return _item(item)


@router.patch("/{queue_id}/items/{item_id}", response_model=LfItem)
async def update_item(queue_id: str, item_id: str, body: LfItemUpdate, p: CurrentPrincipal, request: Request
                      ) -> dict[str, Any]:
    require_configure(p)
    d = deps(request)
    if body.status is None:
        return await get_item(queue_id, item_id, p, request)
    return _item(await app_items.set_item_status(d, p.project_id, queue_id, item_id, body.status))


@router.delete("/{queue_id}/items/{item_id}", response_model=LfDeleted)
async def delete_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    await app_items.remove_item(deps(request), p.project_id, queue_id, item_id, p.actor)
    return {"success": True, "message": "Successfully deleted annotation queue item"}


@router.post("/{queue_id}/assignments", response_model=LfAssignmentPublic)
async def create_assignment(queue_id: str, body: LfAssignment, p: CurrentPrincipal, request: Request
                            ) -> dict[str, Any]:
    require_configure(p)
    d = deps(request)
    q = await app_queues.get_queue(d, p.project_id, queue_id)
    review_deps(request).forget_queue(p.project_id, queue_id)
    if body.user_id not in q["reviewers"]:
        await app_queues.update_queue(d, p.project_id, queue_id, {"reviewers": [*q["reviewers"], body.user_id]})
    return {"userId": body.user_id, "queueId": queue_id, "projectId": p.project_id}


@router.delete("/{queue_id}/assignments", response_model=LfDeleted, response_model_exclude_unset=True)
async def delete_assignment(queue_id: str, body: LfAssignment, p: CurrentPrincipal, request: Request
                            ) -> dict[str, Any]:
    require_configure(p)
    d = deps(request)
    q = await app_queues.get_queue(d, p.project_id, queue_id)
    review_deps(request).forget_queue(p.project_id, queue_id)
    if body.user_id in q["reviewers"]:
        await app_queues.update_queue(d, p.project_id, queue_id,
                                      {"reviewers": [r for r in q["reviewers"] if r != body.user_id]})
    return {"success": True}
