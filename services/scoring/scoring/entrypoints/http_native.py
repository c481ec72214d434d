"""Tally's native API (snake_case): configs with versions and guidelines, scores with history, batches."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scoring.adapters.repository import ScoreFilter
from scoring.application import configs as config_app
from scoring.application import scores as score_app
from scoring.domain.configs import Definition
from scoring.domain.errors import Invalid
from scoring.entrypoints.common import (
    TYPED,
    actor_of,
    clean_input,
    csv,
    decode_cursor,
    deps_of,
    domain_errors,
    encode_cursor,
    int_param,
    invalid_error,
    read_json,
    ts_param,
)
from scoring.entrypoints.http_public import _rejection
from scoring.entrypoints.mapping import config_native, score_input, score_native
from tally_shared.contracts.scoring import (
    ScoreBatchResult,
    ScoreConfigCreate,
    ScoreConfigPage,
    ScoreConfigPublic,
    ScoreConfigUpdate,
    ScoreConfigVersions,
    ScoreHistory,
    ScorePage,
    ScorePublic,
    ScoreSaved,
    ScoreUpdate,
)
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal

router = APIRouter(prefix="/api/v1", tags=["native"])


def _changes(body: BaseModel) -> dict[str, Any]:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for key in ("is_archived", "multi_select", "name", "data_type"):
        if key in changes and changes[key] is None:
            del changes[key]
    return changes


# ------------------------------------------------------------------ configs


@router.post("/score-configs", status_code=201, response_model=ScoreConfigPublic, **TYPED)
async def create_config(body: ScoreConfigCreate, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        config = await config_app.create_config(
            deps_of(request), actor_of(principal), name=body.name,
            definition=Definition(
                data_type=body.data_type, min_value=body.min_value, max_value=body.max_value, step=body.step,
                categories=tuple(body.categories) if body.categories is not None else None,
                multi_select=body.multi_select, max_length=body.max_length,
            ),
            description=body.description, guidelines=body.guidelines,
        )
    return config_native(principal.project_id, config)


@router.get("/score-configs", response_model=ScoreConfigPage, **TYPED)
async def list_configs(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 100)
    include_archived = request.query_params.get("include_archived", "true").lower() != "false"
    configs, total = await config_app.list_configs(deps_of(request), actor_of(principal), page=page, limit=limit,
                                                   include_archived=include_archived)
    return {"data": [config_native(principal.project_id, c) for c in configs],
            "meta": {"page": page, "limit": limit, "total_items": total, "total_pages": math.ceil(total / limit)}}


@router.get("/score-configs/{config_id}", response_model=ScoreConfigPublic, **TYPED)
async def get_config(config_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        config = await config_app.get_config(deps_of(request), actor_of(principal), config_id)
    return config_native(principal.project_id, config)


@router.get("/score-configs/{config_id}/versions", response_model=ScoreConfigVersions, **TYPED)
async def get_config_versions(config_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        versions = await config_app.config_versions(deps_of(request), actor_of(principal), config_id)
    return {"data": [config_native(principal.project_id, c) for c in versions]}


@router.patch("/score-configs/{config_id}", response_model=ScoreConfigPublic, **TYPED)
async def update_config(config_id: str, body: ScoreConfigUpdate, request: Request,
                        principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        config = await config_app.update_config(deps_of(request), actor_of(principal), config_id, _changes(body))
    return config_native(principal.project_id, config)


@router.post("/score-configs/{config_id}/archive", response_model=ScoreConfigPublic, **TYPED)
async def archive_config(config_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        config = await config_app.update_config(deps_of(request), actor_of(principal), config_id,
                                                {"is_archived": True})
    return config_native(principal.project_id, config)


@router.post("/score-configs/{config_id}/unarchive", response_model=ScoreConfigPublic, **TYPED)
async def unarchive_config(config_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        config = await config_app.update_config(deps_of(request), actor_of(principal), config_id,
                                                {"is_archived": False})
    return config_native(principal.project_id, config)


# ------------------------------------------------------------------ scores


@router.post("/scores", status_code=201, response_model=ScoreSaved)
async def create_score(request: Request, principal: CurrentPrincipal,
                       idempotency_key: str | None = Header(None, max_length=200)) -> JSONResponse:
    """Record one score (shaped as ``tally_shared.contracts.scoring.ScoreCreate``). A retry with the same
    ``Idempotency-Key`` header (or ``idempotency_key`` field, or score ``id``) records nothing new
    and answers 200 with the score recorded the first time."""
    body = await read_json(request)
    if isinstance(body, dict) and idempotency_key and "idempotency_key" not in body:
        body["idempotency_key"] = idempotency_key
    async with domain_errors():
        inp = score_input(body, camel=False, allow_author=principal.via == "api_key")
        [outcome] = await score_app.record_scores(deps_of(request), actor_of(principal), [inp])
    if not outcome.ok:
        raise _rejection(outcome)
    assert outcome.score is not None
    saved = ScoreSaved(**dict(outcome.score), project_id=principal.project_id, status=outcome.status)
    return JSONResponse(saved.model_dump(mode="json"),
                        status_code=201 if outcome.status in ("created", "updated") else 200)


@router.post("/scores/batch", response_model=ScoreBatchResult)
@router.post("/scores:batch", response_model=None, include_in_schema=False)
async def create_scores_batch(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Record many automated scores in one transaction and one publish. Each score is accepted or rejected on its
    own: ``results`` says which, with the field and rule for every rejection."""
    body = await read_json(request)
    items = body.get("scores") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        raise invalid_error([], "send {\"scores\": [...]} with at least one score")
    max_batch = request.app.state.settings.max_batch
    if len(items) > max_batch:
        raise ApiError(413, "payload_too_large", f"at most {max_batch} scores per batch")
    allow_author = principal.via == "api_key"
    results: list[dict[str, Any] | None] = [None] * len(items)
    inputs = []
    positions = []
    for i, item in enumerate(items):
        try:
            inputs.append(score_input(item, camel=False, allow_author=allow_author))
            positions.append(i)
        except Invalid as exc:
            results[i] = {"index": i, "status": "rejected", "errors": [p.as_dict() for p in exc.problems]}
    async with domain_errors():
        outcomes = await score_app.record_scores(deps_of(request), actor_of(principal), inputs)
    for pos, outcome in zip(positions, outcomes, strict=True):
        if outcome.ok:
            results[pos] = {"index": pos, "status": outcome.status, "id": outcome.score.id if outcome.score else None}
        else:
            results[pos] = {"index": pos, "status": "rejected", "errors": [p.as_dict() for p in outcome.problems]}
    rejected = sum(1 for r in results if r and r["status"] == "rejected")
    answer = ScoreBatchResult.model_validate({"accepted": len(items) - rejected, "rejected": rejected,
                                             "results": results})
    return JSONResponse(answer.model_dump(mode="json", exclude_unset=True), status_code=200)


@router.get("/scores", response_model=ScorePage, **TYPED)
async def list_scores(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    limit = int_param(request, "limit", 50, 1, 500)
    f = ScoreFilter(
        ids=csv(request, "id"), names=csv(request, "name"), sources=csv(request, "source"),
        data_types=csv(request, "data_type"), environments=csv(request, "environment"),
        config_ids=csv(request, "config_id"), queue_ids=csv(request, "queue_id"),
        author_user_ids=csv(request, "author_user_id"), trace_ids=csv(request, "trace_id"),
        observation_ids=csv(request, "observation_id"), session_ids=csv(request, "session_id"),
        dataset_run_ids=csv(request, "dataset_run_id"), from_ts=ts_param(request, "from"),
        to_ts=ts_param(request, "to"),
    )
    cursor = request.query_params.get("cursor")
    rows = await score_app.list_scores_after(deps_of(request), actor_of(principal), f,
                                             after=decode_cursor(cursor) if cursor else None, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].score.timestamp, rows[-1].score.id)
    return {"data": [score_native(principal.project_id, st) for st in rows], "next_cursor": next_cursor}


@router.get("/scores/{score_id}", response_model=ScorePublic, **TYPED)
async def get_score(score_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        st = await score_app.get_score(deps_of(request), actor_of(principal), score_id)
    return score_native(principal.project_id, st)


@router.patch("/scores/{score_id}", response_model=ScorePublic, **TYPED)
async def change_score(score_id: str, body: ScoreUpdate, request: Request,
                       principal: CurrentPrincipal) -> dict[str, Any]:
    changes = clean_input({name: getattr(body, name) for name in body.model_fields_set})
    async with domain_errors():
        await score_app.change_score(deps_of(request), actor_of(principal), score_id, changes)
        st = await score_app.get_score(deps_of(request), actor_of(principal), score_id)
    return score_native(principal.project_id, st)


@router.delete("/scores/{score_id}", status_code=204, response_model=None)
async def delete_score(score_id: str, request: Request, principal: CurrentPrincipal) -> None:
    async with domain_errors():
        await score_app.delete_score(deps_of(request), actor_of(principal), score_id)


@router.get("/scores/{score_id}/history", response_model=ScoreHistory, **TYPED)
async def get_history(score_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors():
        entries = await score_app.score_history(deps_of(request), actor_of(principal), score_id)
    return {"data": entries}
