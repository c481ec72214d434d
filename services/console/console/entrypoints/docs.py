"""``/api/docs``: the index of the services' OpenAPI pages behind the base URL. Open to anyone, as the pages
themselves are (they describe the API; every call they make still needs credentials)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from console.entrypoints.web import page

router = APIRouter()

# (service, what its API covers): each page is /api/docs/<service>, served by that service
API_PAGES = (
    ("ingest", "Trace intake: Langfuse's batch ingestion, OpenTelemetry (OTLP/HTTP), native traces, trace deletion"),
    ("scoring", "Scores and score configs, datasets, dataset items and runs, comments"),
    ("queue-router", "Annotation queues and their items, reviewing (leases, completion), routing rules"),
    ("projections", "Reading traces, observations, sessions, metrics and analytics; experiments, agreement, "
                    "calibration, exports, dead letters"),
)


@router.get("/api/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> Response:
    return page(None, request, "api_docs.html", pages=API_PAGES)
