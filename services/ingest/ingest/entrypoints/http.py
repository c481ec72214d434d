"""The ingest endpoints: Langfuse batch, OTLP/HTTP traces, Tally's native batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.adapters.configs import ConfigLookup
from ingest.adapters.publisher import Publisher
from ingest.application.ingest import Outcome, check_scores, submit
from ingest.config import Settings
from ingest.domain import langfuse, native, otel
from ingest.domain.batch import Batch, Outgoing
from ingest.domain.report import Report
from ingest.entrypoints.body import read_body
from ingest.entrypoints.openapi import LANGFUSE_REQUEST, NATIVE_REQUEST, OTLP_REQUEST, RESPONSES_207
from ingest.metrics import BYTES_IN, REQUEST_SECONDS, REQUESTS_REJECTED
from tally_shared import content
from tally_shared.envelope import make_envelope
from tally_shared.events import TraceDeleted
from tally_shared.events.ids import MAX_ID_LENGTH
from tally_shared.http import ApiError, error_body
from tally_shared.identity import CurrentPrincipal, require_principal
from tally_shared.topics import TRACES

log = logging.getLogger("tally.ingest")


@dataclass
class Deps:
    settings: Settings
    publisher: Publisher
    configs: ConfigLookup


def _deps(request: Request) -> Deps:
    # The container's (ingest.bootstrap); read directly, not as a FastAPI dependency: this is every request's path.
    deps: Deps = request.app.state.container.deps
    return deps


def _item_limit(deps: Deps, body: bytes) -> int | None:
    """The per-item limit, or None when the whole body is within it (no item can be over: skip measuring)."""
    limit = deps.settings.max_item_bytes
    return None if len(body) <= limit else limit


def _loads(body: bytes) -> tuple[Any, bool]:
    """The parsed body, and whether its items need ``tally_shared.content.clean`` (NUL, lone surrogates, numbers
    beyond a double: applied per item, so only an item holding an unrepresentable number is refused)."""
    try:
        return content.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"body is not valid JSON: {exc}") from None


def _unavailable(deps: Deps, outcome: Outcome) -> ApiError:
    first = next(e for e in outcome.failed.values() if e.status == 503)
    return ApiError(
        503, "unavailable", f"events not stored: {first.message}",
        {"retry_after_seconds": deps.settings.retry_after_seconds},
        headers={"Retry-After": str(deps.settings.retry_after_seconds)},
    )


def _ingestion_response(outcome: Outcome) -> Response:
    """Langfuse's IngestionResponse: ``{"successes": [{id, status}], "errors": [{id, status, message, error}]}``."""
    report = outcome.report
    successes: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, item_id in enumerate(report.ids):
        rejected = report.errors.get(i)
        if rejected is not None:
            errors.append({"id": item_id, "status": rejected[0], "message": rejected[1], "error": rejected[2]})
            continue
        failed = outcome.failed.get(i)
        if failed is not None:
            errors.append({"id": item_id, "status": failed.status, "message": failed.message,
                           "error": {"reason": failed.reason}})
        else:
            successes.append({"id": item_id, "status": 201})
    return Response(orjson.dumps({"successes": successes, "errors": errors}), status_code=207,
                    media_type="application/json")


async def _timed(request: Request, endpoint: str, run: Callable[[Deps, str], Any], project: str) -> Response:
    deps = _deps(request)
    start = time.perf_counter()
    status = 500
    try:
        response: Response = await run(deps, project)
        status = response.status_code
        return response
    except ApiError as exc:
        status = exc.status
        REQUESTS_REJECTED.labels(endpoint, exc.code).inc()
        raise
    finally:
        REQUEST_SECONDS.labels(endpoint, str(status)).observe(time.perf_counter() - start)


async def _body(request: Request, deps: Deps, endpoint: str) -> bytes:
    body = await read_body(request, deps.settings.max_body_bytes)
    BYTES_IN.labels(endpoint).inc(len(body))
    return body


router = APIRouter(tags=["ingest"])


@router.post(
    "/api/public/ingestion", status_code=207, responses=RESPONSES_207, openapi_extra=LANGFUSE_REQUEST,
    summary="Langfuse-compatible batch ingestion",
    description="The batch of Langfuse's ingestion API (trace-create, span-/generation-create and -update, "
    "event-create, typed observation creates, score-create, sdk-log). 207 with per-event successes and errors; "
    "an event is a success only once the broker acknowledged it. 503 with Retry-After if the broker is down.",
)
async def langfuse_ingestion(request: Request, principal: CurrentPrincipal) -> Response:
    async def run(deps: Deps, project: str) -> Response:
        body = await _body(request, deps, "langfuse")
        data, must_clean = _loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
            raise ApiError(400, "bad_request", "body must be an object with a 'batch' list",
                           [{"field": "batch", "rule": "required", "message": "a list of events"}])
        batch, report = langfuse.parse_batch(data["batch"], _item_limit(deps, body), clean=must_clean)
        return await _answer_batch(deps, batch, report, project, "langfuse", request)

    return await _timed(request, "langfuse", run, principal.project_id)


@router.post(
    "/api/v1/ingest", status_code=207, responses=RESPONSES_207, openapi_extra=NATIVE_REQUEST,
    summary="Tally batch ingestion",
    description="Traces, observations (creates and partial updates) and scores in Tally's own shape (the fields "
    "of TraceData, ObservationData and RecordScore). Everything a request says about one trace is published as "
    "one TraceIngested event keyed by the trace id; scores as RecordScore commands for the scoring service. "
    "207 with per-event successes and errors; 503 with Retry-After if the broker is down.",
)
async def native_ingest(request: Request, principal: CurrentPrincipal) -> Response:
    async def run(deps: Deps, project: str) -> Response:
        body = await _body(request, deps, "native")
        data, must_clean = _loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            raise ApiError(400, "bad_request", "body must be an object with an 'events' list",
                           [{"field": "events", "rule": "required", "message": "a list of events"}])
        batch, report = native.parse_events(data["events"], _item_limit(deps, body), clean=must_clean)
        return await _answer_batch(deps, batch, report, project, "native", request)

    return await _timed(request, "native", run, principal.project_id)


def _forwarded(request: Request) -> dict[str, str]:
    """The caller's credentials, for looking up score configs in scoring as the caller."""
    return {k: v for k in ("authorization", "x-tally-project") if (v := request.headers.get(k)) is not None}


async def _answer_batch(deps: Deps, batch: Batch, report: Report, project: str, endpoint: str,
                        request: Request) -> Response:
    await check_scores(batch, report, project=project, configs=deps.configs, headers=_forwarded(request))
    outcome = await submit(batch, report, project=project, publisher=deps.publisher, endpoint=endpoint)
    if outcome.broker_down:
        raise _unavailable(deps, outcome)
    return _ingestion_response(outcome)


_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf", "application/octet-stream")


async def submit_otlp(deps: Deps, batch: Batch, report: Report, project: str, endpoint: str) -> tuple[int, str]:
    """Publish an OTLP request's spans: (rejected spans, why), or ApiError 503 when the broker did not take them
    all. Shared by OTLP/HTTP and OTLP/gRPC so both give the same guarantees."""
    outcome = await submit(batch, report, project=project, publisher=deps.publisher, endpoint=endpoint)
    if any(e.status == 503 for e in outcome.failed.values()):
        # OTLP has no per-span answer: the exporter retries the whole request (event ids are derived from
        # content, so spans already acknowledged are applied once by the consumers).
        raise _unavailable(deps, outcome)
    problems = [(i, e[1]) for i, e in report.errors.items()] + [(i, e.message) for i, e in outcome.failed.items()]
    return len(problems), "; ".join(f"{report.ids[i]}: {m}" for i, m in problems[:10])


async def _otlp_answer(request: Request, deps: Deps, project: str) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json"
    if not is_json and content_type not in _PROTOBUF_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       "OTLP/HTTP takes application/x-protobuf or application/json")
    body = await _body(request, deps, "otlp")
    batch = Batch("otel")
    report = Report()
    limit = _item_limit(deps, body)
    if is_json:
        data, must_clean = _loads(body)
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "body must be an ExportTraceServiceRequest object")
        try:
            otel.add_spans(batch, report, otel.json_spans(data, report, limit, clean=must_clean))
        except content.Unrepresentable as exc:
            # Only a resource's attributes get here (a span's own are refused per span).
            raise ApiError(400, "bad_request", str(exc),
                           [{"field": exc.path, "rule": exc.rule, "message": exc.message}]) from None
        except RecursionError:
            raise ApiError(400, "bad_request", "a resource is nested too deeply to store") from None
    else:
        try:
            req = otel.decode_protobuf(body)
        except (DecodeError, RecursionError) as exc:
            raise ApiError(400, "bad_request", f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        otel.add_spans(batch, report, otel.protobuf_spans(req, report, limit))
    rejected, message = await submit_otlp(deps, batch, report, project, "otlp")
    if is_json:
        payload: dict[str, Any] = {}
        if rejected:
            payload["partialSuccess"] = {"rejectedSpans": rejected, "errorMessage": message}
        return Response(orjson.dumps(payload), media_type="application/json")
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    return Response(resp.SerializeToString(), media_type="application/x-protobuf")


async def _otlp(request: Request, principal: CurrentPrincipal) -> Response:
    async def run(deps: Deps, project: str) -> Response:
        return await _otlp_answer(request, deps, project)

    return await _timed(request, "otlp", run, principal.project_id)


OTLP_PATHS = ("/v1/traces", "/api/public/otel/v1/traces")


class OtlpFastPath:
    """The OTLP/HTTP endpoint without FastAPI's routing, dependency and endpoint machinery (a request of 100 spans
    paid ~0.4 ms there): an ASGI middleware, the app's innermost, that answers ``POST`` to the OTLP paths itself
    with the same handler, authentication, errors (``tally_shared.http``'s JSON bodies) and metrics (the request
    metrics outside it see the route, as if the router had matched it). Every other request goes to the app."""

    def __init__(self, app: ASGIApp, routes: dict[str, BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root):]
            route = self.routes.get(path)
            if route is not None:
                scope["route"] = route
                await self._serve(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            principal = await require_principal(request)

            async def run(deps: Deps, project: str) -> Response:
                return await _otlp_answer(request, deps, project)

            response = await _timed(request, "otlp", run, principal.project_id)
        except ApiError as exc:
            # As tally_shared.http's handler answers it.
            response = JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status,
                                    headers=exc.headers)
        await response(scope, receive, send)


def install_otlp_fast_path(app: FastAPI) -> None:
    """Serve the OTLP paths through ``OtlpFastPath`` (before the app's first request: the middleware stack is
    built then). Innermost of the app's middleware, inside the request metrics."""
    routes: dict[str, BaseRoute] = {
        r.path: r for r in router.routes if isinstance(r, APIRoute) and r.path in OTLP_PATHS}
    assert len(routes) == len(OTLP_PATHS), routes
    app.user_middleware.append(Middleware(OtlpFastPath, routes=routes))


for _path in OTLP_PATHS:
    router.add_api_route(
        _path, _otlp, methods=["POST"], openapi_extra=OTLP_REQUEST, summary="OTLP/HTTP traces",
        description="OpenTelemetry traces (protobuf or JSON, gzip accepted). Spans are mapped to traces and "
        "observations using langfuse.*, OpenInference and gen_ai.* attributes. 200 (with partial_success for "
        "rejected spans) once the broker acknowledged every event; 503 with Retry-After otherwise.",
        response_class=Response,
    )


# -- deletion --------------------------------------------------------------------------------------------------------

MAX_DELETE_IDS = 1000


def _deletion_message(project: str, trace_id: str) -> Outgoing:
    env = make_envelope(TraceDeleted(trace_id=trace_id), project=project, key=trace_id)
    return Outgoing(TRACES.name, trace_id.encode(), env.to_bytes(), TraceDeleted.event_type, [0])


def _trace_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "bad_request", "traceIds must be a non-empty list of trace ids",
                       [{"field": "traceIds", "rule": "required", "message": "a non-empty list"}])
    if len(value) > MAX_DELETE_IDS:
        raise ApiError(400, "bad_request", f"at most {MAX_DELETE_IDS} trace ids per request",
                       [{"field": "traceIds", "rule": "max_items", "message": str(MAX_DELETE_IDS)}])
    bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not 0 < len(v) <= MAX_ID_LENGTH]
    if bad:
        raise ApiError(400, "bad_request", "every trace id must be a string of 1 to 200 characters",
                       [{"field": f"traceIds[{i}]", "rule": "trace_id", "message": "1 to 200 characters"}
                        for i in bad[:20]])
    # the same transformation intake applied to the ids it stored (a NUL became "␀")
    return list(dict.fromkeys(content.clean_text(v) for v in value))


async def _delete(request: Request, principal: CurrentPrincipal, trace_ids: list[str]) -> Response:
    if not principal.can_configure:
        raise ApiError(403, "forbidden", "deleting traces needs the admin or member role")
    deps = _deps(request)
    errors = await deps.publisher.send_all([_deletion_message(principal.project_id, t) for t in trace_ids])
    failed = [e for e in errors if e is not None]
    if failed:
        # Deletions already acknowledged stay; a retry of the whole request deletes the rest (deleting twice is
        # the same as deleting once).
        raise ApiError(
            503, "unavailable", f"deletion not stored: {failed[0].message}",
            {"retry_after_seconds": deps.settings.retry_after_seconds},
            headers={"Retry-After": str(deps.settings.retry_after_seconds)},
        )
    # Langfuse answers deletions before they are applied; so does Tally (the event is stored, the read models
    # follow within moments).
    noun = "Trace" if len(trace_ids) == 1 else "Traces"
    return Response(orjson.dumps({"message": f"{noun} deletion accepted", "traceIds": trace_ids}),
                    media_type="application/json")


@router.delete(
    "/api/public/traces/{trace_id}", summary="Delete a trace",
    description="Publishes TraceDeleted: the trace, its observations, scores and pending queue items are removed "
    "from every read model, and stay removed (a tombstone is kept). 200 once the event is stored; applied "
    "asynchronously, as in Langfuse.",
)
async def delete_trace(trace_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    return await _delete(request, principal, _trace_ids([trace_id]))


@router.delete(
    "/api/public/traces", summary="Delete traces",
    description='Body {"traceIds": [...]} (at most 1000). One TraceDeleted per trace; see DELETE '
    "/api/public/traces/{traceId}.",
)
async def delete_traces(request: Request, principal: CurrentPrincipal) -> Response:
    data, _ = _loads(await _body(request, _deps(request), "delete"))
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", 'body must be {"traceIds": [...]}',
                       [{"field": "traceIds", "rule": "required", "message": "a non-empty list"}])
    return await _delete(request, principal, _trace_ids(data.get("traceIds")))
