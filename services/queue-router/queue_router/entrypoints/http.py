"""Native API: /api/v1/queues (queues, rules, items, reviewing, progress)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from queue_router.adapters.scoring_api import credentials
from queue_router.application import items as app_items
from queue_router.application import queues as app_queues
from queue_router.application import reviewing
from queue_router.application import rules as app_rules
from queue_router.application.deps import Caller, Deps
from queue_router.application.reviewing import ReviewDeps
from tally_shared.contracts.queues import (
    Backfill,
    BackfillResult,
    BlindTraces,
    DecisionPage,
    Heartbeat,
    ItemDetail,
    ItemPage,
    ItemPublic,
    ItemsAdd,
    ItemsAdded,
    LeasedItem,
    NextRequest,
    QueueCreate,
    QueuePage,
    QueueProgress,
    QueuePublic,
    QueueUpdate,
    ReviewAction,
    ReviewActionName,
    ReviewedItem,
    RuleCreate,
    RuleList,
    RulePreview,
    RulePreviewResult,
    RulePublic,
    RuleUpdate,
    TraceRouting,
    UndoneSkip,
)
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal, Principal

router = APIRouter(prefix="/api/v1/queues", tags=["queues"])
routing_router = APIRouter(prefix="/api/v1/routing", tags=["queues"])
review_router = APIRouter(prefix="/api/v1/review", tags=["queues"])


def caller(request: Request) -> Caller:
    return Caller(credentials(request.headers))


def deps(request: Request) -> Deps:
    d: Deps = request.app.state.container.queue_deps
    return d


def review_deps(request: Request) -> ReviewDeps:
    d: ReviewDeps = request.app.state.container.review_deps
    return d


def require_configure(p: Principal) -> None:
    if not p.can_configure:
        raise ApiError(403, "forbidden", "your role cannot configure queues")


async def resolve_reviewer(request: Request, p: Principal, reviewer: str | None) -> str:
    """The reviewer's canonical id: the user id. An email names the member it belongs to, so one person is one
    reviewer whichever way a caller names them."""
    if not p.can_review:
        raise ApiError(403, "forbidden", "your role cannot review")
    if reviewer is None or reviewer == "me":
        if p.user_id is None:
            raise ApiError(422, "validation_error", "an API key must name the reviewer",
                           [{"field": "reviewer", "rule": "required", "message": "required for API keys"}])
        return p.user_id
    if "@" in reviewer:
        user = await request.app.state.identity.get_user_by_email(reviewer)
        if user is None:
            raise ApiError(403, "not_a_reviewer", f"{reviewer!r} is not a user of this project")
        reviewer = user.id
    if p.via == "user" and reviewer != p.user_id and not p.is_admin:
        raise ApiError(403, "forbidden", "only admins act for another reviewer")
    return reviewer


async def _check_reviewer_allowed(request: Request, p: Principal, queue: dict[str, Any], reviewer: str) -> None:
    email = None
    if any("@" in r for r in queue["reviewers"]):
        # Queues saved before reviewers were stored as user ids may still name people by email.
        user = await request.app.state.identity.get_user(reviewer)
        email = user.email if user else None
    if not reviewing.reviewer_allowed(queue, reviewer, email):
        raise ApiError(403, "not_a_reviewer", f"{reviewer!r} is not a reviewer of this queue")


def _page_meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total_items": total, "total_pages": (total + limit - 1) // limit}


# --- queues ---------------------------------------------------------------------------------------------------


@router.post("", status_code=201, summary="Create a queue", response_model=QueuePublic)
async def create_queue(body: QueueCreate, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    return await app_queues.create_queue(deps(request), p.project_id, body, p.actor, caller(request))


@router.get("", summary="List queues", response_model=QueuePage)
async def list_queues(p: CurrentPrincipal, request: Request, page: int = Query(1, ge=1),
                      limit: int = Query(50, ge=1, le=500), include_archived: bool = False) -> dict[str, Any]:
    data, total = await app_queues.list_queues(deps(request), p.project_id, include_archived=include_archived,
                                               page=page, limit=limit)
    return {"data": data, "meta": _page_meta(page, limit, total)}


@router.get("/{queue_id}", summary="Get a queue", response_model=QueuePublic)
async def get_queue(queue_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await app_queues.get_queue(deps(request), p.project_id, queue_id)


@router.patch("/{queue_id}", summary="Update a queue", response_model=QueuePublic)
async def update_queue(queue_id: str, body: QueueUpdate, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    review_deps(request).forget_queue(p.project_id, queue_id)
    return await app_queues.update_queue(deps(request), p.project_id, queue_id, app_queues.queue_changes(body),
                                         caller=caller(request))


@router.post("/{queue_id}/archive", summary="Archive a queue (its rules stop routing)",
             response_model=QueuePublic)
async def archive_queue(queue_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    review_deps(request).forget_queue(p.project_id, queue_id)
    return await app_queues.update_queue(deps(request), p.project_id, queue_id, {}, archive=True)


# --- rules ----------------------------------------------------------------------------------------------------


@router.post("/{queue_id}/rules", status_code=201, summary="Create a routing rule", response_model=RulePublic)
async def create_rule(queue_id: str, body: RuleCreate, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    return await app_rules.create_rule(deps(request), p.project_id, queue_id, body, p.actor)


@router.post("/{queue_id}/rules/preview",
             summary="How many traces of the last N days a rule matches (count: expected items after sampling)",
             response_model=RulePreviewResult)
async def preview_rule(queue_id: str, body: RulePreview, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await app_rules.preview_rule(deps(request), p.project_id, queue_id, body)


@router.get("/{queue_id}/rules", summary="List a queue's routing rules", response_model=RuleList)
async def list_rules(queue_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return {"data": await app_rules.list_rules(deps(request), p.project_id, queue_id)}


@router.get("/{queue_id}/rules/{rule_id}/decisions",
            summary="The rule's decision log: added, duplicate, previously_removed, sampled_out, cap_reached",
            response_model=DecisionPage)
async def rule_decisions(queue_id: str, rule_id: str, p: CurrentPrincipal, request: Request,
                         outcome: str | None = None, page: int = Query(1, ge=1),
                         limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    data, total = await app_rules.rule_decisions(deps(request), p.project_id, queue_id, rule_id, outcome=outcome,
                                                  page=page, limit=limit)
    return {"data": data, "meta": _page_meta(page, limit, total)}


@routing_router.get("/traces/{trace_id}",
                    summary="Every queue decision about a trace; evaluate=true adds the rules it does not match",
                    response_model=TraceRouting)
async def trace_routing(trace_id: str, p: CurrentPrincipal, request: Request, evaluate: bool = False,
                        page: int = Query(1, ge=1), limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    return await app_rules.trace_decisions(deps(request), p.project_id, trace_id, evaluate=evaluate, page=page,
                                            limit=limit)


@review_router.get("/blind-traces", summary="Traces whose scores the caller may not read now (blind review)",
                   response_model=BlindTraces, response_model_exclude_unset=True)
async def blind_traces(p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await reviewing.blind_traces(review_deps(request), p)


@router.patch("/{queue_id}/rules/{rule_id}", summary="Update a routing rule (pause with active=false)",
              response_model=RulePublic)
async def update_rule(queue_id: str, rule_id: str, body: RuleUpdate, p: CurrentPrincipal, request: Request
                      ) -> dict[str, Any] | None:
    require_configure(p)
    return await app_rules.update_rule(deps(request), p.project_id, queue_id, rule_id, body)


@router.delete("/{queue_id}/rules/{rule_id}", status_code=204, summary="Delete a routing rule")
async def delete_rule(queue_id: str, rule_id: str, p: CurrentPrincipal, request: Request) -> Response:
    require_configure(p)
    await app_rules.update_rule(deps(request), p.project_id, queue_id, rule_id, None)
    return Response(status_code=204)


# --- items ----------------------------------------------------------------------------------------------------


@router.post("/{queue_id}/items", status_code=201, summary="Add items by id (up to 1,000 per call)",
             response_model=ItemsAdded, response_model_exclude_unset=True)
async def add_items(queue_id: str, body: ItemsAdd, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    return await app_items.add_items(deps(request), p.project_id, queue_id, body, p.actor)


async def _backfill(queue_id: str, body: Backfill, p: Principal, request: Request) -> dict[str, Any]:
    require_configure(p)
    return await app_items.backfill(deps(request), p.project_id, queue_id, body, p.actor)


@router.post("/{queue_id}/items:backfill", summary="Add items by a filter over traces already seen",
             response_model=BackfillResult)
async def backfill(queue_id: str, body: Backfill, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await _backfill(queue_id, body, p, request)


@router.post("/{queue_id}/items/backfill", summary="Same as items:backfill", response_model=BackfillResult)
async def backfill_alias(queue_id: str, body: Backfill, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await _backfill(queue_id, body, p, request)


@router.get("/{queue_id}/items", summary="List items (filter by status; by a reviewer's own status with reviewer)",
            response_model=ItemPage, response_model_exclude_unset=True)
async def list_items(
    queue_id: str, p: CurrentPrincipal, request: Request,
    status: str | None = Query(None, description="pending | in_progress | completed | removed; with reviewer: "
                                                 "pending | in_progress | completed | skipped | flagged"),
    reviewer: str | None = Query(None, description="a reviewer id, or `me`"),
    page: int = Query(1, ge=1), limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    who = None
    if reviewer is not None:
        who = p.user_id if reviewer == "me" else reviewer
        if who is None:
            raise ApiError(422, "validation_error", "`me` needs a signed-in user",
                           [{"field": "reviewer", "rule": "user_required", "message": "API keys name a reviewer"}])
    data, total = await app_items.list_items(deps(request), p.project_id, queue_id, status=status, reviewer=who,
                                              page=page, limit=limit)
    return {"data": data, "meta": _page_meta(page, limit, total)}


@router.get("/{queue_id}/items/{item_id}", summary="Get an item with its reviews and routing decisions",
            response_model=ItemDetail, response_model_exclude_unset=True)
async def get_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await app_items.get_item(deps(request), p.project_id, queue_id, item_id)


@router.delete("/{queue_id}/items/{item_id}", summary="Remove an item (remembered: no rule re-adds it)",
               response_model=ItemPublic, response_model_exclude_unset=True)
async def remove_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    require_configure(p)
    return await app_items.remove_item(deps(request), p.project_id, queue_id, item_id, p.actor)


# --- reviewing ------------------------------------------------------------------------------------------------


@router.post("/{queue_id}/next", summary="Lease the reviewer's next item (204 when none is left)",
             response_model=LeasedItem, response_model_exclude_unset=True,
             responses={204: {"description": "nothing left for this reviewer"}})
async def next_item(queue_id: str, p: CurrentPrincipal, request: Request, body: NextRequest | None = None
                    ) -> Any:
    reviewer = await resolve_reviewer(request, p, body.reviewer if body else None)
    rd = review_deps(request)
    queue = await reviewing.queue_for_review(rd, p.project_id, queue_id)
    await _check_reviewer_allowed(request, p, queue, reviewer)
    got = await reviewing.next_item(rd, p.project_id, queue_id, reviewer, queue)
    if got is None:
        return Response(status_code=204)
    return got


_ITEM_ACTION = "/{queue_id}/items/{item_id}/"


@router.post(_ITEM_ACTION + "complete", summary="Complete the reviewer's item (next: also lease the next one)",
             response_model=ReviewedItem, response_model_exclude_unset=True)
async def complete_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                        body: ReviewAction | None = None) -> Any:
    body = body or ReviewAction()
    reviewer = await resolve_reviewer(request, p, body.reviewer)
    rd = review_deps(request)
    queue = await reviewing.queue_for_review(rd, p.project_id, queue_id)
    await reviewing.check_required_scores(rd, p.project_id, queue_id, item_id, reviewer, queue,
                                          credentials(request.headers), via_api_key=p.via == "api_key")
    done = await reviewing.complete(rd, p.project_id, queue_id, item_id, reviewer, body.lease_id)
    return await _with_next(request, p, body, queue_id, reviewer, done)


async def _give_back(queue_id: str, item_id: str, status: str, p: Principal, request: Request,
                     body: ReviewAction | None) -> Any:
    body = body or ReviewAction()
    reviewer = await resolve_reviewer(request, p, body.reviewer)
    given = await reviewing.give_back(review_deps(request), p.project_id, queue_id, item_id, reviewer,
                                      body.lease_id, status=status, reason=body.reason)
    return await _with_next(request, p, body, queue_id, reviewer, given)


@router.post(_ITEM_ACTION + "skip", summary="Skip the item (it returns to the pool for others)",
             response_model=ReviewedItem, response_model_exclude_unset=True)
async def skip_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                    body: ReviewAction | None = None) -> Any:
    return await _give_back(queue_id, item_id, "skipped", p, request, body)


@router.post(_ITEM_ACTION + "flag", summary="Flag the item (with a reason) and give it back",
             response_model=ReviewedItem, response_model_exclude_unset=True)
async def flag_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                    body: ReviewAction | None = None) -> Any:
    return await _give_back(queue_id, item_id, "flagged", p, request, body)


@router.post(_ITEM_ACTION + "release", summary="Give the lease back without reviewing",
             response_model=ReviewedItem, response_model_exclude_unset=True)
async def release_item(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                       body: ReviewAction | None = None) -> Any:
    return await _give_back(queue_id, item_id, "released", p, request, body)


@router.post(_ITEM_ACTION + "heartbeat", summary="Extend the reviewer's lease", response_model=Heartbeat)
async def heartbeat(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                    body: ReviewAction | None = None) -> Any:
    body = body or ReviewAction()
    reviewer = await resolve_reviewer(request, p, body.reviewer)
    rd = review_deps(request)
    queue = await reviewing.queue_for_review(rd, p.project_id, queue_id)
    return await reviewing.heartbeat(rd, p.project_id, queue_id, item_id, reviewer, body.lease_id,
                                     queue["lease_seconds"])


@router.post(_ITEM_ACTION + "undo-skip", summary="Take back a skip (the item is leased again when a slot is free)",
             response_model=UndoneSkip, response_model_exclude_unset=True)
async def undo_skip(queue_id: str, item_id: str, p: CurrentPrincipal, request: Request,
                    body: ReviewAction | None = None) -> Any:
    body = body or ReviewAction()
    reviewer = await resolve_reviewer(request, p, body.reviewer)
    rd = review_deps(request)
    queue = await reviewing.queue_for_review(rd, p.project_id, queue_id)
    return await reviewing.undo_skip(rd, p.project_id, queue_id, item_id, reviewer, queue)


@router.post(_ITEM_ACTION + "{action}", include_in_schema=False)
async def unknown_action(queue_id: str, item_id: str, action: ReviewActionName) -> None:
    """Only reached by a name no route above takes: its validation answers 422, naming the actions."""
    raise ApiError(404, "not_found", f"no action {action!r}")


async def _with_next(request: Request, p: Principal, body: ReviewAction, queue_id: str, reviewer: str,
                     answer: dict[str, Any]) -> Any:
    """With ``next``: the reviewer's next item leased in the same call (one round trip between items)."""
    if not body.next:
        return answer
    rd = review_deps(request)
    queue = await reviewing.queue_for_review(rd, p.project_id, queue_id)
    await _check_reviewer_allowed(request, p, queue, reviewer)
    answer["next"] = await reviewing.next_item(rd, p.project_id, queue_id, reviewer, queue)
    return answer


@router.get("/{queue_id}/progress", summary="Counts by status and completions per hour, per queue and reviewer",
            response_model=QueueProgress)
async def progress(queue_id: str, p: CurrentPrincipal, request: Request) -> dict[str, Any]:
    return await reviewing.progress(review_deps(request), p.project_id, queue_id)
