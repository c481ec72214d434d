"""Every route of scoring declares its request and answer models (``tally_shared.contracts.scoring``)."""

from __future__ import annotations

from .conftest import Service

NO_BODY = {("DELETE", "/api/public/scores/{score_id}"), ("DELETE", "/api/v1/scores/{score_id}")}  # 204


async def test_every_route_declares_its_answer(service: Service) -> None:
    spec = service.app.openapi()
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path in ("/healthz", "/readyz", "/metrics") or (method.upper(), path) in NO_BODY:
                continue
            answers = [r for code, r in op["responses"].items() if code.startswith("2")]
            if not any("$ref" in str(r.get("content", {})) for r in answers):
                missing.append((method.upper(), path))
    assert not missing, missing
    schemas = spec["components"]["schemas"]
    # camelCase on the wire for the Langfuse-compatible shapes, snake_case for the native ones
    assert "dataType" in schemas["LfScoreConfigPublic"]["properties"]
    assert "data_type" in schemas["ScoreConfigPublic"]["properties"]
