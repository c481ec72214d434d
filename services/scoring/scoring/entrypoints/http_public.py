"""Langfuse-compatible API (shapes as the langfuse 5.x SDK sends and parses them)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request, Response
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
    bad_query,
    csv,
    decode_cursor,
    deps_of,
    domain_errors,
    encode_cursor,
    float_param,
    int_param,
    invalid_error,
    read_json,
    ts_param,
)
from scoring.entrypoints.mapping import CAMEL, config_public, score_input, score_v1, score_v3
from tally_shared.contracts import Created
from tally_shared.contracts.scoring import (
    LfScoreConfigCreate,
    LfScoreConfigPage,
    LfScoreConfigPublic,
    LfScoreConfigUpdate,
    LfScoresAccepted,
    LfScoresPartial,
    LfScoreV1,
    LfScoreV1Page,
    LfScoreV3Page,
)
from tally_shared.events import ScoreDataType
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal

router = APIRouter(tags=["langfuse-compatible"])


def config_changes(body: BaseModel) -> dict[str, Any]:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for key in ("is_archived", "multi_select", "name", "data_type"):
        if key in changes and changes[key] is None:
            del changes[key]  # null means "leave as is" for fields that cannot be empty
    return changes


# ------------------------------------------------------------------ score configs


@router.get("/api/public/score-configs", response_model=LfScoreConfigPage, **TYPED)
async def list_score_configs(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 100)
    configs, total = await config_app.list_configs(deps_of(request), actor_of(principal), page=page, limit=limit)
    return {"data": [config_public(principal.project_id, c) for c in configs],
            "meta": {"page": page, "limit": limit, "totalItems": total, "totalPages": math.ceil(total / limit)}}


@router.post("/api/public/score-configs", response_model=LfScoreConfigPublic, **TYPED)
async def create_score_config(body: LfScoreConfigCreate, request: Request,
                              principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors(CAMEL):
        config = await config_app.create_config(
            deps_of(request), actor_of(principal), name=body.name,
            definition=Definition(
                data_type=body.data_type, min_value=body.min_value, max_value=body.max_value, step=body.step,
                categories=tuple(body.categories) if body.categories is not None else None,
                multi_select=body.multi_select, max_length=body.max_length,
            ),
            description=body.description, guidelines=body.guidelines,
        )
    return config_public(principal.project_id, config)


@router.get("/api/public/score-configs/{config_id}", response_model=LfScoreConfigPublic, **TYPED)
async def get_score_config(config_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors(CAMEL):
        config = await config_app.get_config(deps_of(request), actor_of(principal), config_id)
    return config_public(principal.project_id, config)


@router.patch("/api/public/score-configs/{config_id}", response_model=LfScoreConfigPublic, **TYPED)
async def update_score_config(config_id: str, body: LfScoreConfigUpdate, request: Request,
                              principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors(CAMEL):
        config = await config_app.update_config(deps_of(request), actor_of(principal), config_id,
                                                config_changes(body))
    return config_public(principal.project_id, config)


# ------------------------------------------------------------------ scores


@router.post("/api/public/scores", response_model=Created,
             responses={202: {"model": LfScoresAccepted}, 207: {"model": LfScoresPartial}})
async def create_scores(request: Request, principal: CurrentPrincipal) -> Response:
    """One score (answers ``{"id"}``, as Langfuse v2/v3 servers did) or a list of scores (SDK 5: 202 when all
    were accepted, 207 with counts and per-score errors otherwise)."""
    body = await read_json(request)
    deps = deps_of(request)
    actor = actor_of(principal)
    max_batch = request.app.state.settings.max_batch
    allow_author = principal.via == "api_key"
    if isinstance(body, list):
        if not body:
            raise invalid_error([], "send at least one score")
        if len(body) > max_batch:
            raise ApiError(413, "payload_too_large", f"at most {max_batch} scores per request")
        inputs: list[Any] = []
        parse_errors: dict[int, Invalid] = {}
        for i, item in enumerate(body):
            try:
                inputs.append(score_input(item, camel=True, allow_author=allow_author))
            except Invalid as exc:
                parse_errors[i] = exc
        valid_idx = [i for i in range(len(body)) if i not in parse_errors]
        async with domain_errors(CAMEL):
            outcomes = await score_app.record_scores(deps, actor, inputs)
        errors: list[dict[str, Any]] = []
        for i, parse_error in parse_errors.items():
            errors.append(_batch_error(i, parse_error.problems))
        for pos, outcome in enumerate(outcomes):
            if not outcome.ok:
                errors.append(_batch_error(valid_idx[pos], outcome.problems))
        if not errors:
            return JSONResponse({"message": "Accepted"}, status_code=202)
        errors.sort(key=lambda e: e["index"])
        return JSONResponse({"accepted": len(body) - len(errors), "rejected": len(errors), "errors": errors},
                            status_code=207)
    async with domain_errors(CAMEL):
        inp = score_input(body, camel=True, allow_author=allow_author)
        [outcome] = await score_app.record_scores(deps, actor, [inp])
    if not outcome.ok:
        raise _rejection(outcome)
    assert outcome.score is not None
    return JSONResponse({"id": outcome.score.id}, status_code=200)


def _batch_error(index: int, problems: list[Any]) -> dict[str, Any]:
    return {"index": index, "message": f"score {index}: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
            "errors": [p.as_dict() for p in problems]}


def _rejection(outcome: score_app.Outcome) -> ApiError:
    if outcome.error == "forbidden":
        return ApiError(403, "forbidden", outcome.problems[0].message, [p.as_dict() for p in outcome.problems])
    if outcome.error == "conflict":
        return ApiError(409, "conflict", outcome.problems[0].message, [p.as_dict() for p in outcome.problems])
    return invalid_error(outcome.problems)


@router.delete("/api/public/scores/{score_id}", status_code=204, response_model=None)
async def delete_score(score_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    async with domain_errors(CAMEL):
        await score_app.delete_score(deps_of(request), actor_of(principal), score_id)
    return Response(status_code=204)


@router.get("/api/public/scores/{score_id}", response_model=LfScoreV1, **TYPED)
@router.get("/api/public/v2/scores/{score_id}", response_model=LfScoreV1, **TYPED)
async def get_score(score_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with domain_errors(CAMEL):
        st = await score_app.get_score(deps_of(request), actor_of(principal), score_id)
    return score_v1(principal.project_id, st)


_V3_GROUPS = {"details", "subject", "annotation"}


def _upper(values: list[str] | None) -> list[str] | None:
    return [v.upper() for v in values] if values is not None else None


@router.get("/api/public/v3/scores", response_model=LfScoreV3Page, **TYPED)
async def list_scores_v3(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    limit = int_param(request, "limit", 50, 1, 100)
    groups = set(csv(request, "fields") or [])
    unknown = groups - _V3_GROUPS
    if unknown:
        raise bad_query("fields", "enum", f"unknown field group(s) {sorted(unknown)}; allowed: details, subject, "
                                          "annotation")
    f = ScoreFilter(
        ids=csv(request, "id"), names=csv(request, "name"), sources=_upper(csv(request, "source")),
        data_types=_upper(csv(request, "dataType")), environments=csv(request, "environment"),
        config_ids=csv(request, "configId"), queue_ids=csv(request, "queueId"),
        author_user_ids=csv(request, "authorUserId"), trace_ids=csv(request, "traceId"),
        observation_ids=csv(request, "observationId"), session_ids=csv(request, "sessionId"),
        dataset_run_ids=csv(request, "experimentId"), from_ts=ts_param(request, "fromTimestamp"),
        to_ts=ts_param(request, "toTimestamp"), value_min=float_param(request, "valueMin"),
        value_max=float_param(request, "valueMax"),
    )
    if f.session_ids and (f.trace_ids or f.observation_ids or f.dataset_run_ids):
        raise bad_query("sessionId", "exclusive", "cannot be combined with traceId, observationId or experimentId")
    if f.dataset_run_ids and (f.trace_ids or f.observation_ids):
        raise bad_query("experimentId", "exclusive", "cannot be combined with traceId or observationId")
    if f.observation_ids and not f.trace_ids:
        raise bad_query("observationId", "requires_trace", "observation ids are scoped to a trace: give traceId")
    for name, allowed in (("source", {"API", "ANNOTATION", "EVAL"}),
                          ("dataType", {t.value for t in ScoreDataType} | {"CORRECTION"})):
        given = _upper(csv(request, name)) or []
        if set(given) - allowed:
            raise bad_query(name, "enum", f"one of {', '.join(sorted(allowed))}")
    single_type = f.data_types[0] if f.data_types and len(f.data_types) == 1 else None
    if (f.value_min is not None or f.value_max is not None) and single_type != "NUMERIC":
        raise bad_query("valueMin", "requires_numeric", "valueMin/valueMax need dataType=NUMERIC")
    raw_values = csv(request, "value")
    if raw_values is not None:
        if single_type not in ("NUMERIC", "BOOLEAN", "CATEGORICAL"):
            raise bad_query("value", "requires_data_type", "value needs one dataType of NUMERIC, BOOLEAN, CATEGORICAL")
        if single_type == "CATEGORICAL":
            f.string_values = raw_values
        elif single_type == "BOOLEAN":
            if any(v.lower() not in ("true", "false") for v in raw_values):
                raise bad_query("value", "boolean", "BOOLEAN values are true or false")
            f.values = [1.0 if v.lower() == "true" else 0.0 for v in raw_values]
        else:
            try:
                f.values = [float(v) for v in raw_values]
            except ValueError:
                raise bad_query("value", "number", "NUMERIC values must be numbers") from None
            if not all(math.isfinite(v) for v in f.values):
                raise bad_query("value", "finite", "NUMERIC values must be finite")
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    rows = await score_app.list_scores_after(deps_of(request), actor_of(principal), f, after=after,
                                             limit=limit + 1)
    meta: dict[str, Any] = {"limit": limit}
    if len(rows) > limit:
        rows = rows[:limit]
        meta["cursor"] = encode_cursor(rows[-1].score.timestamp, rows[-1].score.id)
    return {"data": [score_v3(principal.project_id, st, groups) for st in rows], "meta": meta}


_OPERATORS = {"<", ">", "<=", ">=", "!=", "="}


@router.get("/api/public/v2/scores", response_model=LfScoreV1Page, **TYPED)
async def list_scores_v2(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    page = int_param(request, "page", 1, 1, 1_000_000)
    limit = int_param(request, "limit", 50, 1, 100)
    for unsupported in ("userId", "traceTags"):
        if request.query_params.get(unsupported):
            # Scoring does not hold trace data (scores may even arrive before their trace).
            raise bad_query(unsupported, "unsupported",
                            "filtering scores by trace attributes is served by the traces API, not here")
    f = ScoreFilter(
        ids=csv(request, "scoreIds"), names=csv(request, "name"), sources=_upper(csv(request, "source")),
        data_types=_upper(csv(request, "dataType")), environments=csv(request, "environment"),
        config_ids=csv(request, "configId"), queue_ids=csv(request, "queueId"),
        trace_ids=csv(request, "traceId"), observation_ids=csv(request, "observationId"),
        session_ids=csv(request, "sessionId"), dataset_run_ids=csv(request, "datasetRunId"),
        author_user_ids=csv(request, "authorUserId"),
        from_ts=ts_param(request, "fromTimestamp"), to_ts=ts_param(request, "toTimestamp"),
    )
    operator = request.query_params.get("operator")
    value = float_param(request, "value")
    if operator is not None or value is not None:
        if operator not in _OPERATORS or value is None:
            raise bad_query("operator", "enum", f"give operator (one of {' '.join(sorted(_OPERATORS))}) and value")
        f.value_op = (operator, value)
    rows, total = await score_app.list_scores_page(deps_of(request), actor_of(principal), f, page=page,
                                                   limit=limit)
    return {"data": [score_v1(principal.project_id, st) for st in rows],
            "meta": {"page": page, "limit": limit, "totalItems": total, "totalPages": math.ceil(total / limit)}}
