"""Tally's own batch shape (``POST /api/v1/ingest``): the fields of ``tally_shared.events`` in snake_case.

``{"events": [{"id": "<client event id>", "type": "trace" | "observation" | "score", "timestamp"?: ISO 8601,
"body": {...}}]}``. A trace body is ``TraceData`` (``id`` required), an observation body is ``ObservationData``
(``id``, ``trace_id`` required; ``type`` defaults to SPAN on first sight), a score body is ``RecordScore``.
Every field present, even as null, is set; absent fields are left as they are (partial updates).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.domain import fields as f
from ingest.domain.batch import Batch
from ingest.domain.fields import Invalid
from ingest.domain.report import Report

EVENT_TYPES = ("trace", "observation", "score")
TRACE = f.compile_table(f.TRACE_FIELDS)
OBSERVATION = f.compile_table(f.OBSERVATION_FIELDS)
SCORE = f.compile_table(f.SCORE_FIELDS)


def parse_events(events: list[Any], max_item_bytes: int | None, *, clean: bool = False) -> tuple[Batch, Report]:
    out = Batch("native")
    report = Report()
    report.apply_each(events, max_item_bytes, lambda index, raw: _one(out, index, raw), clean=clean)
    return out, report


def _one(out: Batch, index: int, ev: dict[str, Any]) -> None:
    kind = ev.get("type")
    if kind not in EVENT_TYPES:
        raise Invalid("type", "enum", "must be one of trace, observation, score")
    ts = ev.get("timestamp")
    at: datetime | None = f.parse_time("timestamp", ts) if ts is not None else None
    body = ev.get("body")
    if not isinstance(body, dict):
        raise Invalid("body", "type", "must be an object")
    if kind == "trace":
        trace = f.convert(TRACE, body)
        trace["id"] = f.ident("body.id", body.get("id"))
        out.add_trace(index, trace, at)
    elif kind == "observation":
        obs = f.convert(OBSERVATION, body)
        obs["id"] = f.ident("body.id", body.get("id"))
        obs["trace_id"] = f.ident("body.trace_id", body.get("trace_id"))
        if obs.get("type", 0) is None:
            del obs["type"]
        out.add_observation(index, obs, at)
    else:
        score = f.convert(SCORE, body)
        if "name" not in score:
            raise Invalid("body.name", "required", "a score needs a name")
        score.setdefault("source", "API")
        score.setdefault("idempotency_key", ev["id"])
        key = score.get("trace_id") or score.get("session_id") or score.get("dataset_run_id") or score.get("id")
        out.add_score(index, score, key or ev["id"], at)
