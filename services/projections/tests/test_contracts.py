"""Every read declares its contract (``tally_shared.contracts``), and answers keep the bytes FastAPI's encoder
wrote before they were checked against it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError

from projections.domain.errors import Invalid, NotFound, Unsupported
from projections.entrypoints.http import JSON, http_error
from tally_shared.content import dumps_read
from tally_shared.contracts.read_models import LfTracePage, TracePage

from .conftest import Harness

UNTYPED = {("GET", "/api/v1/exports/dataset.jsonl")}  # a JSONL stream, not one JSON answer


async def test_every_json_route_declares_its_answer(harness: Harness) -> None:
    spec = harness.app.openapi()  # type: ignore[attr-defined]
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path in ("/healthz", "/readyz", "/metrics") or (method.upper(), path) in UNTYPED:
                continue
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" not in ok:
                missing.append((method.upper(), path))
    assert not missing, missing


def test_answers_are_written_as_the_encoder_wrote_them() -> None:
    # What the reads hold: aware and naive times with and without microseconds, Decimals from SQL sums, tuples,
    # sets, non-string keys, content with NUL and non-ASCII text.
    now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    content: dict[str, Any] = {
        "at": now, "naive": datetime(2026, 3, 2, 9, 0), "paris": now.astimezone(timezone(timedelta(hours=1))),
        "whole": Decimal("3"), "part": Decimal("2.50"), "pair": ("a", 1), "ids": {uuid.UUID(int=1)},
        "by_hour": {1: 2, "x": None}, "text": "caf\u00e9 \x00 \u2603", "nan": float("nan"), "deep": [[{"k": [1.5]}]],
    }
    before = dumps_read(jsonable_encoder(content), option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
    assert JSON(content).body == before


def test_a_drifted_answer_does_not_validate() -> None:
    row = {"id": "t", "name": None, "timestamp": datetime.now(UTC)}
    with pytest.raises(ValidationError):
        TracePage.model_validate({"data": [row], "meta": {"page": 1, "limit": 1, "total": 1}})
    with pytest.raises(ValidationError):
        LfTracePage.model_validate({"data": [], "meta": {"page": 1, "limit": 1, "totalItems": 0, "totalPages": 0},
                                    "extra": True})


def test_domain_errors_keep_their_http_answers() -> None:
    e = http_error(NotFound("trace 't' not found"))
    assert (e.status, e.code, e.message, e.details) == (404, "not_found", "trace 't' not found", None)
    e = http_error(Invalid("bucket", "enum", "hour | day", "bucket must be hour or day"))
    assert (e.status, e.code, e.message) == (422, "validation_error", "bucket must be hour or day")
    assert e.details == [{"field": "bucket", "rule": "enum", "message": "hour | day"}]
    e = http_error(Unsupported("query.view", "supported_view", "one of ['traces']"))
    assert (e.status, e.code, e.message) == (400, "bad_request", "query.view: one of ['traces']")
    e = http_error(Unsupported(None, None, "unsupported operator 'x' for tags"))
    assert (e.status, e.details) == (400, None)
