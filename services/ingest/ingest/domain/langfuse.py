"""Langfuse's batch ingestion (``POST /api/public/ingestion``) mapped to Tally's events.

Wire shape (langfuse-python ``api/resources/ingestion``): ``{"batch": [{"id", "timestamp", "type", "body",
"metadata"?}], "metadata"?}`` with camelCase bodies. Types: trace-create, span-create/update,
generation-create/update, event-create, the typed observation creates (agent, tool, chain, retriever, evaluator,
embedding, guardrail), legacy observation-create/update, score-create, dataset-run-item-create (the experiment
link of a trace) and sdk-log.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ingest.domain import fields as f
from ingest.domain.batch import Batch
from ingest.domain.fields import Invalid
from ingest.domain.report import Report

TRACE_ALIASES = {"userId": "user_id", "sessionId": "session_id"}
OBSERVATION_ALIASES = {
    "traceId": "trace_id", "startTime": "start_time", "endTime": "end_time",
    "completionStartTime": "completion_start_time", "modelParameters": "model_parameters",
    "statusMessage": "status_message", "parentObservationId": "parent_observation_id",
    "usageDetails": "usage_details", "costDetails": "cost_details",
    "promptName": "prompt_name", "promptVersion": "prompt_version",
}
SCORE_ALIASES = {
    "traceId": "trace_id", "observationId": "observation_id", "sessionId": "session_id",
    "datasetRunId": "dataset_run_id", "dataType": "data_type", "configId": "config_id",
    # Langfuse's ScoreBody has no evaluator; these are the names of scoring's Langfuse-shaped API.
    "evaluatorName": "evaluator_name", "evaluatorVersion": "evaluator_version",
}

TRACE = f.compile_table(f.TRACE_FIELDS, TRACE_ALIASES)
OBSERVATION = f.compile_table(f.OBSERVATION_FIELDS, OBSERVATION_ALIASES)
SCORE = f.compile_table(f.SCORE_FIELDS, SCORE_ALIASES)

# event type -> (observation type or None for "given in the body", is an update)
OBSERVATION_EVENTS: dict[str, tuple[str | None, bool]] = {
    "span-create": ("SPAN", False), "span-update": ("SPAN", True),
    "generation-create": ("GENERATION", False), "generation-update": ("GENERATION", True),
    "event-create": ("EVENT", False),
    "agent-create": ("AGENT", False), "tool-create": ("TOOL", False), "chain-create": ("CHAIN", False),
    "retriever-create": ("RETRIEVER", False), "evaluator-create": ("EVALUATOR", False),
    "embedding-create": ("EMBEDDING", False), "guardrail-create": ("GUARDRAIL", False),
    "observation-create": (None, False), "observation-update": (None, True),
}
EVENT_TYPES = frozenset((*OBSERVATION_EVENTS, "trace-create", "score-create", "sdk-log", "dataset-run-item-create"))

_LEGACY_USAGE = {"input": "input", "output": "output", "total": "total",
                 "promptTokens": "input", "completionTokens": "output", "totalTokens": "total"}
_LEGACY_COST = {"inputCost": "input", "outputCost": "output", "totalCost": "total"}


def parse_batch(batch: list[Any], max_item_bytes: int | None, source: str = "langfuse", *,
                clean: bool = False) -> tuple[Batch, Report]:
    out = Batch(source)
    report = Report()
    report.apply_each(batch, max_item_bytes, lambda index, raw: _one(out, report, index, raw), clean=clean)
    return out, report


def _one(out: Batch, report: Report, index: int, ev: dict[str, Any]) -> None:
    kind = ev.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise Invalid("type", "enum", f"unknown event type {str(kind)[:50]!r}")
    ts = ev.get("timestamp")
    at = f.parse_time("timestamp", ts) if ts is not None else None
    body = ev.get("body")
    if not isinstance(body, dict):
        raise Invalid("body", "type", "must be an object")
    if kind == "sdk-log":
        report.unpublished.add(index)
        report.reasons["sdk_log"] += 1
        return
    if kind == "trace-create":
        trace = f.convert(TRACE, body)
        trace["id"] = f.ident("body.id", body["id"]) if body.get("id") is not None else str(uuid.uuid4())
        if "timestamp" not in trace and at is not None:
            trace["timestamp"] = at.isoformat()
        out.add_trace(index, trace, at)
        return
    if kind == "score-create":
        _score(out, index, ev["id"], body, at)
        return
    if kind == "dataset-run-item-create":
        # The experiment link: this trace ran this dataset item in this run.
        trace_id = f.ident("body.traceId", body.get("traceId"))
        link = {"id": trace_id, "dataset_run_name": f.name("body.runName", body.get("runName")),
                "dataset_item_id": f.ident("body.datasetItemId", body.get("datasetItemId"))}
        # The dataset id names the run's dataset: experiment comparison shows runs by dataset name.
        if body.get("datasetId") is not None:
            link["dataset_id"] = f.ident("body.datasetId", body.get("datasetId"))
        out.add_trace(index, link, at)
        return
    obs_type, is_update = OBSERVATION_EVENTS[kind]
    _observation(out, index, body, at, obs_type, is_update)


def _observation(out: Batch, index: int, body: dict[str, Any], at: datetime | None, obs_type: str | None,
                 is_update: bool) -> None:
    obs = f.convert(OBSERVATION, body)
    if body.get("id") is not None:
        obs["id"] = f.ident("body.id", body["id"])
    elif is_update:
        raise Invalid("body.id", "required", "an update must name the observation")
    else:
        obs["id"] = str(uuid.uuid4())
    if obs_type is not None:
        obs["type"] = obs_type
    elif not is_update and obs.get("type") is None:
        raise Invalid("body.type", "required", "observation-create needs a type")
    elif obs.get("type") is None:
        obs.pop("type", None)
    usage = body.get("usage")
    if usage is not None and "usage_details" not in obs:
        _legacy_usage(obs, usage)
    if not is_update and "start_time" not in obs and at is not None:
        obs["start_time"] = at.isoformat()
    trace_id = body.get("traceId", body.get("trace_id"))
    if trace_id is not None:
        obs["trace_id"] = f.ident("body.traceId", trace_id)
    elif is_update:
        raise Invalid("body.traceId", "required", "an update must name its trace")
    else:
        # As Langfuse does: an observation sent without a trace gets a trace of its own.
        obs["trace_id"] = str(uuid.uuid4())
        trace: dict[str, Any] = {"id": obs["trace_id"]}
        if obs.get("name") is not None:
            trace["name"] = obs["name"]
        if obs.get("start_time") is not None:
            trace["timestamp"] = obs["start_time"]
        out.add_trace(index, trace, at)
    out.add_observation(index, obs, at)


def _legacy_usage(obs: dict[str, Any], usage: Any) -> None:
    if not isinstance(usage, dict):
        raise Invalid("body.usage", "type", "must be an object")
    details = {_LEGACY_USAGE[k]: v for k, v in usage.items() if k in _LEGACY_USAGE}
    if details:
        obs["usage_details"] = f.opt_numbers("body.usage", details)
    costs = {_LEGACY_COST[k]: v for k, v in usage.items() if k in _LEGACY_COST}
    if costs and "cost_details" not in obs:
        obs["cost_details"] = f.opt_numbers("body.usage", costs)


def _score(out: Batch, index: int, event_id: str, body: dict[str, Any], at: datetime | None) -> None:
    score = f.convert(SCORE, body)
    if "name" not in score:
        raise Invalid("body.name", "required", "a score needs a name")
    score.setdefault("source", "API")
    if score.get("timestamp") is None and at is not None:
        score["timestamp"] = at.isoformat()
    score["idempotency_key"] = event_id
    key = score.get("trace_id") or score.get("session_id") or score.get("dataset_run_id") or score.get("id")
    out.add_score(index, score, key or event_id, at)
