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
    ("/api/public/v2/datasets", "scoring"),
    ("/api/public/datasets", "scoring"),
    ("/api/public/dataset-items", "scoring"),
    ("/api/public/dataset-run-items", "scoring"),
    ("/api/public/comments", "scoring"),
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
    ("/api/public/projects", "projections"),
    ("/api/public/metrics", "projections"),
    ("/api/public/v2/metrics", "projections"),
    ("/api/v1/traces", "projections"),
    ("/api/v1/sessions", "projections"),
    ("/api/v1/observations", "projections"),
    ("/api/v1/analytics", "projections"),
    ("/api/v1/experiments", "projections"),
    ("/api/v1/agreement", "projections"),
    ("/api/v1/calibration", "projections"),
    ("/api/v1/exports", "projections"),
    ("/api/v1/progress", "projections"),
    ("/api/v1/dead-letters", "projections"),
)

# Each service's OpenAPI page behind the base URL (``tally_shared.service.docs_path``); ``/api/docs`` itself is the
# console's index of them.
ROUTES += tuple((f"/api/docs/{s}", s) for s in SERVICES if s != "console")

DEFAULT_SERVICE = "console"

# Paths whose writes belong to another service than their reads: (method, prefix, service). Deleting traces is a
# trace event, published by ingest (which owns trace intake); reading them is projections'.
METHOD_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("DELETE", "/api/public/traces", "ingest"),
)

DEFAULT_PORTS = {"gateway": 3000, "ingest": 8101, "queue-router": 8102, "scoring": 8103, "projections": 8104,
                 "console": 8105, "ingest-grpc": 4317}
# Ports a service serves besides its HTTP one (not behind the HTTP/1.1 gateway): port name -> (service, setting).
EXTRA_PORTS = {"ingest-grpc": ("ingest", "GRPC_PORT")}


def env_name(service: str) -> str:
    """The service's part of its environment variables: ``queue-router`` -> ``QUEUE_ROUTER``."""
    return service.upper().replace("-", "_")


def _matches(path: str, prefix: str) -> bool:
    bare = prefix.rstrip("/")
    return path == bare or path.startswith(bare + "/")


def route(path: str, method: str = "GET") -> str:
    """The service that serves ``method path``: the longest matching prefix, on a path-segment boundary; a
    ``METHOD_ROUTES`` entry for that prefix and method overrides it."""
    best = ""
    service = DEFAULT_SERVICE
    for prefix, svc in ROUTES:
        bare = prefix.rstrip("/")
        if _matches(path, prefix) and len(bare) > len(best):
            best, service = bare, svc
    for m, prefix, svc in METHOD_ROUTES:
        if m == method.upper() and prefix.rstrip("/") == best:
            return svc
    return service
