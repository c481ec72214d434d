"""The one routing table behind the base URL: path prefix -> service. The ``tally up`` gateway uses it, and
``deploy/nginx.conf`` is checked against it by a test."""

from __future__ import annotations

SERVICES = ("ingest", "queue-router", "scoring", "projections", "console")

ROUTES: tuple[tuple[str, str], ...] = (
    # ingest
    ("/api/public/ingestion", "ingest"),
    ("/api/public/otel/", "ingest"),
    ("/v1/traces", "ingest"),
    ("/api/v1/ingest", "ingest"),
    # scoring
    ("/api/public/scores", "scoring"),
    ("/api/public/v2/scores", "scoring"),
    ("/api/public/v3/scores", "scoring"),
    ("/api/public/score-configs", "scoring"),
    ("/api/v1/scores", "scoring"),
    ("/api/v1/score-configs", "scoring"),
    # queue-router
    ("/api/public/annotation-queues", "queue-router"),
    ("/api/v1/queues", "queue-router"),
    ("/api/v1/review", "queue-router"),
    ("/api/v1/routing", "queue-router"),
    # projections
    ("/api/public/traces", "projections"),
    ("/api/public/observations", "projections"),
    ("/api/public/v2/observations", "projections"),
    ("/api/public/sessions", "projections"),
    ("/api/v1/traces", "projections"),
    ("/api/v1/observations", "projections"),
    ("/api/v1/analytics", "projections"),
    ("/api/v1/experiments", "projections"),
    ("/api/v1/agreement", "projections"),
    ("/api/v1/calibration", "projections"),
    ("/api/v1/exports", "projections"),
    ("/api/v1/progress", "projections"),
)

DEFAULT_SERVICE = "console"

DEFAULT_PORTS = {"gateway": 3000, "ingest": 8101, "queue-router": 8102, "scoring": 8103, "projections": 8104,
                 "console": 8105}


def env_name(service: str) -> str:
    """The service's part of its environment variables: ``queue-router`` -> ``QUEUE_ROUTER``."""
    return service.upper().replace("-", "_")


def route(path: str) -> str:
    """The service that serves ``path`` (longest matching prefix, on a path-segment boundary)."""
    best = ""
    service = DEFAULT_SERVICE
    for prefix, svc in ROUTES:
        bare = prefix.rstrip("/")
        if (path == bare or path.startswith(bare + "/")) and len(bare) > len(best):
            best, service = bare, svc
    return service
