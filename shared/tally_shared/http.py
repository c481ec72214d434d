"""What every service's HTTP app has: ``/healthz``, ``/readyz``, ``/metrics``, and errors as machine-readable JSON.

Error body, everywhere: ``{"error": {"code": "...", "message": "...", "details": [...]}}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

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
