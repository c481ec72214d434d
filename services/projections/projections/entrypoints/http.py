"""HTTP reads. Every route is scoped to the caller's project (``CurrentPrincipal``)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import ResponseValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.blind import Blind, blind_for
from projections.adapters.queries.dashboards import SqlDashboardReads
from projections.adapters.queries.evaluation import SqlEvaluationReads, SqlExportReads
from projections.adapters.queries.metrics import SqlMetricsReads
from projections.adapters.queries.sessions import SqlSessionReads
from projections.adapters.queries.traces import SqlTraceReads
from projections.adapters.tables import Tables
from projections.adapters.views import RawJSON
from projections.application import dashboards, evaluation, metrics, sessions, traces
from projections.domain.errors import Invalid, NotFound, ReadError, Unsupported
from tally_shared.content import dumps_read
from tally_shared.contracts.read_models import (
    Agreement,
    Calibration,
    ExperimentRuns,
    LfDailyMetrics,
    LfMetrics,
    LfObservation,
    LfObservationPage,
    LfObservationV2Page,
    LfProjects,
    LfSessionPage,
    LfSessionWithTraces,
    LfTracePage,
    LfTraceWithDetails,
    QueueProgressDetail,
    QueueProgressList,
    RunComparison,
    ScoreAnalytics,
    SessionPage,
    TraceDetail,
    TracePage,
)
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal, Principal


def _default(o: Any) -> Any:
    if type(o) is RawJSON:  # a stored input or output: its text as it is
        return o.fragment()
    # As FastAPI's encoder wrote them before answers were checked against their contracts: a whole Decimal as
    # an integer, any other as a float.
    if isinstance(o, Decimal):
        return int(o) if o.as_tuple().exponent >= 0 else float(o)  # type: ignore[operator]
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    raise TypeError


class JSON(JSONResponse):
    """An answer written by orjson straight from the rows read (times as Python writes them, ``+00:00``). A
    JSONResponse, so that the OpenAPI document shows each route's contract."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            # One stored value orjson cannot write must not fail a whole list (see tally_shared.content).
            return dumps_read(jsonable_encoder(content, custom_encoder={RawJSON: RawJSON.value}), default=_default,
                              option=orjson.OPT_NON_STR_KEYS)


def _answering(endpoint: Callable[..., Awaitable[Any]], contract: type[BaseModel]) -> Callable[..., Awaitable[Any]]:
    """The endpoint, its answer checked against its contract and written by orjson. Checking is validation
    only (pydantic-core, no copy is serialised): the bytes are those of the dict the read built, and an answer
    that drifted from its contract fails here, as FastAPI's own response validation would, not in a client."""
    validator = contract.__pydantic_validator__

    @functools.wraps(endpoint)
    async def answer(*args: Any, **kwargs: Any) -> Any:
        out = await endpoint(*args, **kwargs)
        if isinstance(out, Response):
            return out
        try:
            validator.validate_python(out)
        except ValidationError as exc:
            raise ResponseValidationError(exc.errors(include_url=False), body=out) from None
        return JSON(out)

    answer.answers_contract = True  # type: ignore[attr-defined]
    return answer


def http_error(exc: ReadError) -> ApiError:
    """A read model's refusal as the answer clients know: 404, 422 for a broken rule, and 400 for a query the
    Langfuse-compatible reads do not serve (Langfuse's SDK maps that to its typed error)."""
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.message)
    if isinstance(exc, Unsupported):
        return ApiError(400, "bad_request", exc.message, exc.problems())
    if isinstance(exc, Invalid):
        return ApiError(422, "validation_error", exc.message, exc.problems())
    return ApiError(400, "bad_request", exc.message)


class ReadRoute(APIRoute):
    """A read: its handler may raise the read models' domain errors (mapped here, at the edge), and its answer
    is checked against its ``response_model`` (a contract of ``tally_shared.contracts``) without FastAPI's
    re-encoding of every value (see ``_answering``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, response_model: Any = None,
                 **kwargs: Any) -> None:
        if (isinstance(response_model, type) and issubclass(response_model, BaseModel)
                and not getattr(endpoint, "answers_contract", False)):  # a route copied by include_router
            endpoint = _answering(endpoint, response_model)
        super().__init__(path, endpoint, response_model=response_model, **kwargs)

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def mapped(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except ReadError as exc:
                raise http_error(exc) from None
            return response

        return mapped


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.runtime.sessions


def _tables(request: Request) -> Tables:
    return request.app.state.tables


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _sessions(request)() as session:
        yield session


DB = Annotated[AsyncSession, Depends(_session)]
TablesDep = Annotated[Tables, Depends(_tables)]


# The read stores: the SQL of each concept over the request's session (adapters/queries), handed to the
# application's plain functions.
def _session_reads(db: DB, t: TablesDep) -> SqlSessionReads:
    return SqlSessionReads(db, t)


def _dashboard_reads(db: DB, t: TablesDep) -> SqlDashboardReads:
    return SqlDashboardReads(db, t)


def _trace_reads(db: DB, t: TablesDep) -> SqlTraceReads:
    return SqlTraceReads(db, t)


def _evaluation_reads(db: DB, t: TablesDep) -> SqlEvaluationReads:
    return SqlEvaluationReads(db, t)


def _metrics_reads(db: DB, t: TablesDep) -> SqlMetricsReads:
    return SqlMetricsReads(db, t)


SessionStore = Annotated[SqlSessionReads, Depends(_session_reads)]
MetricsStore = Annotated[SqlMetricsReads, Depends(_metrics_reads)]
EvaluationStore = Annotated[SqlEvaluationReads, Depends(_evaluation_reads)]
TraceStore = Annotated[SqlTraceReads, Depends(_trace_reads)]
DashboardStore = Annotated[SqlDashboardReads, Depends(_dashboard_reads)]


def _utc(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


public = APIRouter(tags=["langfuse-compatible"], default_response_class=JSON, route_class=ReadRoute)
native = APIRouter(prefix="/api/v1", tags=["read models"], default_response_class=JSON, route_class=ReadRoute)


# -- Langfuse-compatible -------------------------------------------------------------------------------------------

async def _blind(request: Request, principal: Principal) -> Blind:
    return await blind_for(request.app.state.blind, principal, request.headers)


def _hide_scores(blind: Blind, trace_id: str | None, scores: list[Any], author_key: str) -> list[Any]:
    """On a trace the caller reviews blind, only their own annotations remain."""
    if not blind.hides(trace_id):
        return scores
    return [s for s in scores if isinstance(s, dict) and blind.own(s, author_key)]


def _drop_hidden(blind: Blind, out: Any, key: str) -> Any:
    """Per-object rows that show others' or automated scores of a trace the caller reviews blind are left out."""
    if blind.trace_ids and isinstance(out, dict) and isinstance(out.get(key), list):
        out[key] = [row for row in out[key] if not blind.hides(row.get("trace_id"))]
    return out


@public.get("/api/public/traces/{trace_id}", response_model=LfTraceWithDetails)
async def get_public_trace(trace_id: str, principal: CurrentPrincipal, store: TraceStore,
                           request: Request) -> Any:
    """TraceWithFullDetails: the trace with its observations, scores, latency (s) and total cost. A reviewer
    reviewing the trace in a blind queue sees only their own scores."""
    # Asked while the trace is read: the answer is needed only to filter.
    blind, out = await asyncio.gather(_blind(request, principal),
                                      traces.public_trace(store, principal.project_id, trace_id))
    out["scores"] = _hide_scores(blind, trace_id, out.get("scores", []), "authorUserId")
    return out


@public.get("/api/public/traces", response_model=LfTracePage)
async def list_public_traces(
    principal: CurrentPrincipal, store: TraceStore, request: Request,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    name: str | None = None,
    session_id: Annotated[str | None, Query(alias="sessionId")] = None,
    from_timestamp: Annotated[datetime | None, Query(alias="fromTimestamp")] = None,
    to_timestamp: Annotated[datetime | None, Query(alias="toTimestamp")] = None,
    order_by: Annotated[str | None, Query(alias="orderBy")] = None,
    tags: Annotated[list[str] | None, Query()] = None,
    version: str | None = None,
    release: str | None = None,
    environment: Annotated[list[str] | None, Query()] = None,
    fields: str | None = None,
) -> Any:
    blind = await _blind(request, principal)
    out = await traces.public_traces(
        store, principal.project_id, page=page, limit=limit, order_by=order_by, fields=fields,
        filters=traces.TraceFilters(
            name=name, user_id=user_id, session_id=session_id, from_ts=_utc(from_timestamp),
            to_ts=_utc(to_timestamp), tags=tags or [], version=version, release=release,
            environment=environment or [],
        ),
    )
    for row in out.get("data", []):
        if blind.hides(row.get("id")) and "scores" in row:
            row["scores"] = []  # ids only here; the caller's own scores are on the trace itself
    return out


@public.get("/api/public/v2/observations", response_model=LfObservationV2Page)
async def list_public_observations_v2(
    principal: CurrentPrincipal, store: TraceStore,
    fields: str | None = None,
    expand_metadata: Annotated[str | None, Query(alias="expandMetadata")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
    parse_io_as_json: Annotated[bool | None, Query(alias="parseIoAsJson")] = None,
    name: str | None = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    session_id: Annotated[str | None, Query(alias="sessionId")] = None,
    type: str | None = None,
    trace_id: Annotated[str | None, Query(alias="traceId")] = None,
    level: str | None = None,
    parent_observation_id: Annotated[str | None, Query(alias="parentObservationId")] = None,
    is_root_observation: Annotated[bool | None, Query(alias="isRootObservation")] = None,
    environment: Annotated[list[str] | None, Query()] = None,
    from_start_time: Annotated[datetime | None, Query(alias="fromStartTime")] = None,
    to_start_time: Annotated[datetime | None, Query(alias="toStartTime")] = None,
    version: str | None = None,
    filter: str | None = None,
) -> Any:
    if parse_io_as_json:
        raise ApiError(400, "bad_request", "parseIoAsJson is deprecated; remove it or set it to false",
                       [{"field": "parseIoAsJson", "rule": "deprecated", "message": "must be false"}])
    return await traces.public_observations_v2(
        store, principal.project_id, fields=fields, expand_metadata=expand_metadata, limit=limit, cursor=cursor,
        filter_json=filter, filters=traces.ObservationFilters(
            name=name, user_id=user_id, session_id=session_id, type_=type, trace_id=trace_id, level=level,
            parent_observation_id=parent_observation_id, is_root_observation=is_root_observation,
            environment=environment or [], from_start_time=_utc(from_start_time),
            to_start_time=_utc(to_start_time), version=version,
        ),
    )


@public.get("/api/public/observations", response_model=LfObservationPage)
async def list_public_observations(
    principal: CurrentPrincipal, store: SessionStore,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    name: str | None = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    type: str | None = None,
    trace_id: Annotated[str | None, Query(alias="traceId")] = None,
    level: str | None = None,
    parent_observation_id: Annotated[str | None, Query(alias="parentObservationId")] = None,
    environment: Annotated[list[str] | None, Query()] = None,
    from_start_time: Annotated[datetime | None, Query(alias="fromStartTime")] = None,
    to_start_time: Annotated[datetime | None, Query(alias="toStartTime")] = None,
    version: str | None = None,
) -> Any:
    """ObservationsViews (Langfuse's v1 list): page/limit paging with ``meta``."""
    return await sessions.public_observations_v1(store, principal.project_id, page=page, limit=limit,
                                                 filters=sessions.ObservationFilters(
        name=name, user_id=user_id, type_=type, trace_id=trace_id, level=level,
        parent_observation_id=parent_observation_id, environment=environment or [],
        from_start_time=_utc(from_start_time), to_start_time=_utc(to_start_time), version=version,
    ))


@public.get("/api/public/observations/{observation_id}", response_model=LfObservation)
async def get_public_observation(observation_id: str, principal: CurrentPrincipal, store: TraceStore) -> Any:
    return await traces.public_observation(store, principal.project_id, observation_id)


@public.get("/api/public/projects", response_model=LfProjects)
async def get_public_projects(request: Request, principal: CurrentPrincipal) -> Any:
    """Projects: the project of the caller's key (what ``langfuse.auth_check()`` asks for)."""
    name = await request.app.state.identity.project_name(principal.project_id)
    return {"data": [{"id": principal.project_id, "name": name or principal.project_id,
                      "organization": {"id": "tally", "name": "Tally"}, "metadata": {}}]}


@public.get("/api/public/sessions", response_model=LfSessionPage)
async def list_public_sessions(
    principal: CurrentPrincipal, store: SessionStore,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    from_timestamp: Annotated[datetime | None, Query(alias="fromTimestamp")] = None,
    to_timestamp: Annotated[datetime | None, Query(alias="toTimestamp")] = None,
    environment: Annotated[list[str] | None, Query()] = None,
) -> Any:
    """PaginatedSessions: sessions (traces sharing a session id), newest first by their first trace."""
    return await sessions.public_sessions(store, principal.project_id, page=page, limit=limit,
                                          from_ts=_utc(from_timestamp), to_ts=_utc(to_timestamp),
                                          environment=environment or [])


@public.get("/api/public/sessions/{session_id}", response_model=LfSessionWithTraces)
async def get_public_session(session_id: str, principal: CurrentPrincipal, store: SessionStore) -> Any:
    """SessionWithTraces."""
    return await sessions.public_session(store, principal.project_id, session_id)


@public.get("/api/public/metrics/daily", response_model=LfDailyMetrics)
async def daily_metrics(
    principal: CurrentPrincipal, store: MetricsStore,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    trace_name: Annotated[str | None, Query(alias="traceName")] = None,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    tags: Annotated[list[str] | None, Query()] = None,
    environment: Annotated[list[str] | None, Query()] = None,
    from_timestamp: Annotated[datetime | None, Query(alias="fromTimestamp")] = None,
    to_timestamp: Annotated[datetime | None, Query(alias="toTimestamp")] = None,
) -> Any:
    """DailyMetrics: traces, observations, cost and usage per model per UTC day."""
    return await metrics.daily_metrics(store, principal.project_id, page=page, limit=limit,
                                       filters=metrics.DailyFilters(
        trace_name=trace_name, user_id=user_id, tags=tags or [], environment=environment or [],
        from_ts=_utc(from_timestamp), to_ts=_utc(to_timestamp),
    ))


MetricsQuery = Annotated[str, Query(max_length=20_000, description="the query object as JSON")]


@public.get("/api/public/metrics", response_model=LfMetrics)
async def query_metrics_v1(principal: CurrentPrincipal, store: MetricsStore, query: MetricsQuery) -> Any:
    """Langfuse's metrics query (views traces, observations, scores-numeric, scores-categorical)."""
    return await metrics.query_metrics(store, principal.project_id, query, v2=False)


@public.get("/api/public/v2/metrics", response_model=LfMetrics)
async def query_metrics_v2(principal: CurrentPrincipal, store: MetricsStore, query: MetricsQuery) -> Any:
    """Langfuse's v2 metrics query (views observations, scores-numeric, scores-boolean, scores-categorical)."""
    return await metrics.query_metrics(store, principal.project_id, query, v2=True)


# -- native trace view -------------------------------------------------------------------------------------------

@native.get("/traces", response_model=TracePage)
async def list_traces(
    principal: CurrentPrincipal, store: TraceStore, request: Request,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    name: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    tags: Annotated[list[str] | None, Query()] = None,
    environment: Annotated[list[str] | None, Query()] = None,
    release: str | None = None,
    version: str | None = None,
    from_timestamp: datetime | None = None,
    to_timestamp: datetime | None = None,
    order_by: str | None = None,
    level: Annotated[str | None, Query(pattern="^(DEBUG|DEFAULT|WARNING|ERROR)$")] = None,
    score_name: str | None = None,
    score_min: float | None = None,
    score_max: float | None = None,
    score_label: str | None = None,
    score_source: Annotated[str | None, Query(pattern="^(ANNOTATION|EVAL|API)$")] = None,
) -> Any:
    """Traces for the console's table: filters on trace fields, on an observation level and on scores."""
    blind = await _blind(request, principal)
    out = await traces.native_traces(
        store, principal.project_id, page=page, limit=limit, order_by=order_by, level=level,
        score_name=score_name, score_min=score_min, score_max=score_max, score_label=score_label,
        score_source=score_source, filters=traces.TraceFilters(
            name=name, user_id=user_id, session_id=session_id, from_ts=_utc(from_timestamp),
            to_ts=_utc(to_timestamp), tags=tags or [], version=version, release=release,
            environment=environment or [],
        ),
    )
    if blind.trace_ids:
        by_score = any(v is not None for v in (score_name, score_min, score_max, score_label, score_source))
        kept = []
        for row in out["data"]:
            if blind.hides(row["id"]):
                if by_score:
                    continue  # a score filter would tell what the hidden scores are
                row["scores"], row["scores_hidden"] = [], True
            kept.append(row)
        out["data"] = kept
    return out


@native.get("/sessions", response_model=SessionPage)
async def list_sessions(
    principal: CurrentPrincipal, store: SessionStore,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """Sessions for the console: trace count, first and last trace, users."""
    return await sessions.native_sessions(store, principal.project_id, page=page, limit=limit)


@native.get("/traces/{trace_id}", response_model=TraceDetail)
async def get_trace(trace_id: str, principal: CurrentPrincipal, store: TraceStore, request: Request) -> Any:
    """The trace, its observation tree, every score (author, source, config version, comment) and its queue
    items with their reviews. A reviewer reviewing the trace in a blind queue sees only their own scores
    (``scores_hidden``: true)."""
    blind, out = await asyncio.gather(_blind(request, principal),
                                      traces.native_trace(store, principal.project_id, trace_id))
    if blind.hides(trace_id):
        out["scores"] = _hide_scores(blind, trace_id, out.get("scores", []), "author_user_id")
        out["scores_hidden"] = True
    return out


# -- queue progress ------------------------------------------------------------------------------------------------

@native.get("/progress/queues", response_model=QueueProgressList)
async def list_queue_progress(principal: CurrentPrincipal, store: DashboardStore) -> Any:
    return {"data": await dashboards.queues_progress(store, principal.project_id)}


@native.get("/progress/queues/{queue_id}", response_model=QueueProgressDetail)
async def get_queue_progress(
    queue_id: str, principal: CurrentPrincipal, store: DashboardStore,
    bucket: Annotated[str, Query(pattern="^(hour|day)$")] = "hour",
) -> Any:
    return await dashboards.queue_progress(store, principal.project_id, queue_id, bucket=bucket)


# -- score analytics -------------------------------------------------------------------------------------------------

@native.get("/analytics/scores", response_model=ScoreAnalytics)
async def score_analytics(
    principal: CurrentPrincipal, store: DashboardStore,
    name: Annotated[list[str] | None, Query()] = None,
    config_id: str | None = None,
    source: Annotated[str | None, Query(pattern="^(ANNOTATION|EVAL|API)$")] = None,
    data_type: Annotated[str | None, Query(pattern="^(NUMERIC|CATEGORICAL|BOOLEAN)$")] = None,
    bucket: Annotated[str, Query(pattern="^(hour|day)$")] = "day",
    from_timestamp: datetime | None = None,
    to_timestamp: datetime | None = None,
    trace_name: str | None = None,
    tags: Annotated[list[str] | None, Query()] = None,
    environment: str | None = None,
    release: str | None = None,
    user_id: str | None = None,
    bins: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Any:
    """Count, mean (95% CI), distribution and per-bucket points per score name, source and config."""
    return await dashboards.score_analytics(
        store, principal.project_id, bucket=bucket, names=name or [], config_id=config_id, source=source,
        data_type=data_type, from_ts=_utc(from_timestamp), to_ts=_utc(to_timestamp), trace_name=trace_name,
        tags=tags or [], environment=environment, release=release, user_id=user_id, bins=bins,
    )


# -- experiments, agreement, calibration, export --------------------------------------------------------------------

@native.get("/experiments/runs", response_model=ExperimentRuns)
async def experiment_runs(principal: CurrentPrincipal, store: EvaluationStore,
                          dataset_name: str | None = None) -> Any:
    return {"data": await evaluation.experiment_runs(store, principal.project_id, dataset_name)}


@native.get("/experiments/compare", response_model=RunComparison)
async def compare_runs(
    principal: CurrentPrincipal, store: EvaluationStore,
    runs: Annotated[str, Query(min_length=1, max_length=2000, description="comma-separated run names")],
    win_score: str | None = None,
    higher_is_better: bool = True,
) -> Any:
    names = [r.strip() for r in runs.split(",") if r.strip()][:20]
    return await evaluation.compare_runs(store, principal.project_id, names, win_score=win_score,
                                         higher_is_better=higher_is_better)


@native.get("/agreement", response_model=Agreement)
async def agreement(
    principal: CurrentPrincipal, store: EvaluationStore, request: Request,
    queue_id: str | None = None,
    config_id: str | None = None,
    score_name: str | None = None,
    level: Annotated[str | None, Query(pattern="^(nominal|ordinal|interval|ratio)$")] = None,
    top: Annotated[int, Query(ge=0, le=500)] = 20,
) -> Any:
    """Krippendorff's alpha (level from the config's data type unless given), Cohen's kappa per reviewer pair,
    percent agreement and the most disputed objects."""
    blind = await _blind(request, principal)
    out = await evaluation.agreement(store, principal.project_id, queue_id=queue_id, config_id=config_id,
                                      score_name=score_name, level=level, top=top)
    return _drop_hidden(blind, out, "most_disputed")


@native.get("/calibration", response_model=Calibration)
async def calibration(
    principal: CurrentPrincipal, store: EvaluationStore, request: Request,
    evaluator: Annotated[str, Query(min_length=1, description="name of the automated score")],
    config_id: str | None = None,
    score_name: str | None = None,
    bucket: Annotated[str, Query(pattern="^(day|week)$")] = "day",
    top: Annotated[int, Query(ge=0, le=500)] = 20,
) -> Any:
    blind = await _blind(request, principal)
    out = await evaluation.calibration(store, principal.project_id, config_id=config_id,
                                        score_name=score_name, evaluator=evaluator, bucket=bucket, top=top)
    return _drop_hidden(blind, out, "biggest_disagreements")


@native.get("/exports/dataset.jsonl")
async def export_dataset(
    request: Request, principal: CurrentPrincipal, t: TablesDep,
    config_id: str | None = None,
    score_name: str | None = None,
    object_type: Annotated[str | None, Query(pattern="^(TRACE|OBSERVATION)$")] = None,
    min_reviewers: Annotated[int, Query(ge=1, le=100)] = 1,
    min_agreement: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0,
    include_io: bool = True,
) -> StreamingResponse:
    """Labelled objects as JSONL, streamed. ``min_agreement``: the share of reviewers that must agree with the
    consensus label (1.0 = only unanimous items)."""
    if config_id is None and score_name is None:
        raise ApiError(422, "validation_error", "name a score config or a score name",
                       [{"field": "config_id", "rule": "required", "message": "config_id or score_name"}])
    blind = await _blind(request, principal)
    stream = evaluation.export_dataset(
        SqlExportReads(_sessions(request), t), principal.project_id, config_id=config_id, score_name=score_name,
        object_type=object_type, min_reviewers=min_reviewers, min_agreement=min_agreement, include_io=include_io,
        chunk=request.app.state.settings.export_chunk, hidden_traces=blind.trace_ids,
    )
    return StreamingResponse(stream, media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="dataset.jsonl"'})


def routers() -> list[APIRouter]:
    return [public, native]
