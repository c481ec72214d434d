import pytest

from tally_cli.routes import ROUTES, route


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/public/ingestion", "ingest"),
        ("/api/public/otel/v1/traces", "ingest"),
        ("/v1/traces", "ingest"),
        ("/api/public/scores", "scoring"),
        ("/api/public/scores/abc", "scoring"),
        ("/api/public/v3/scores", "scoring"),
        ("/api/public/score-configs/x", "scoring"),
        ("/api/public/annotation-queues/q/items", "queue-router"),
        ("/api/v1/queues/q/next", "queue-router"),
        ("/api/public/traces/t1", "projections"),
        ("/api/public/v2/observations", "projections"),
        ("/api/v1/progress/queues/q", "projections"),
        ("/", "console"),
        ("/queues/q/review", "console"),
        # A prefix matches on a path-segment boundary only.
        ("/api/public/scoresheet", "console"),
        ("/api/v1/queuesx", "console"),
    ],
)
def test_route(path: str, service: str) -> None:
    assert route(path) == service


def test_every_prefix_routes_to_its_service() -> None:
    for prefix, service in ROUTES:
        assert route(prefix.rstrip("/")) == service


def test_method_routes() -> None:
    assert route("/api/public/traces/t1", "DELETE") == "ingest"
    assert route("/api/public/traces", "delete") == "ingest"
    assert route("/api/public/traces/t1", "GET") == "projections"
    assert route("/api/public/traces") == "projections"
    assert route("/api/public/projects") == "projections"
