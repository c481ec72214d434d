"""What every service's HTTP app has: ``/healthz``, ``/readyz``, ``/metrics``, request metrics and a trace id in
the log context of every request, and errors as machine-readable JSON.

Error body, everywhere: ``{"error": {"code": "...", "message": "...", "details": [...]}}``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally_shared import logs

HealthCheck = Callable[[], Awaitable[Any]]


class ApiError(Exception):
    """Raise from a handler to answer ``status`` with a machine-readable body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{field, rule, message}``: the field path and the rule broken."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or "body", "rule": e.get("type", "invalid"), "message": e.get("msg", "")})
    return out


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                 422: "validation_error", 429: "too_many_requests", 503: "unavailable"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", "request failed validation", validation_details(list(exc.errors()))),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def install_ops_routes(
    app: FastAPI,
    *,
    service: str,
    checks: dict[str, HealthCheck],
    registry: CollectorRegistry | None = None,
) -> None:
    """``/healthz`` is liveness: the process is up and serving HTTP (a supervisor restarts it only if this fails).
    ``/readyz`` is readiness: it runs every check (database, broker, consumers, ...) with a timeout; 503 if any
    fails. Deployments route traffic and report health by ``/readyz``."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        return JSONResponse({"service": service, "status": "ok"})

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=3)
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
        return JSONResponse({"service": service, "status": "ok" if ok else "unavailable", "checks": results},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        data = generate_latest(REGISTRY)
        if registry is not None:
            data += generate_latest(registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def trace_id_of(scope: Scope) -> str:
    """The W3C ``traceparent`` trace id of the request, else its ``x-request-id``, else a new one: every line
    logged for the request (and the events it publishes) carries it."""
    request_id = None
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            found = _TRACEPARENT.match(value.decode("latin-1").strip().lower())
            if found:
                return found.group(1)
        elif name == b"x-request-id":
            request_id = value.decode("latin-1").strip()
    if request_id and _REQUEST_ID.match(request_id):
        return request_id
    return uuid.uuid4().hex


class RequestMetrics:
    """Count and latency of HTTP requests by method, route template (never the raw path: ids would explode the
    label set) and status; binds the request's trace id in the log context."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry, prefix: str = "tally_http") -> None:
        self.app = app
        self.requests = Counter(f"{prefix}_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram(f"{prefix}_request_seconds", "HTTP request latency, to the last body byte",
                                 ["method", "route"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = logs.bind(trace_id=trace_id_of(scope))
        try:
            await self.app(scope, receive, send_status)
        finally:
            logs.unbind(token)
            route = scope.get("route")
            path = scope.get("path", "")
            template = getattr(route, "path", None) or ("/static" if path.startswith("/static/") else "unmatched")
            method = scope.get("method", "")
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - start)
