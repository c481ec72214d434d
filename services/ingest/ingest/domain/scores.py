"""Scores refused at intake: every rule scoring applies (``tally_shared.score_rules``), checked per item against
the score's config as scoring serves it, so a score ingest acknowledges is one scoring records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tally_shared.events import ScoreConfigData, ScoreDataType, ScoreSource
from tally_shared.score_rules import ID_MAX, Invalid, ScoreInput, build_score

# Tally field -> the field as the client spelled it, per format.
_LANGFUSE_NAMES = {
    "trace_id": "traceId", "observation_id": "observationId", "session_id": "sessionId",
    "dataset_run_id": "datasetRunId", "data_type": "dataType", "config_id": "configId",
    "evaluator_name": "evaluatorName", "evaluator_version": "evaluatorVersion",
}
_FIELDS = ("id", "name", "value", "data_type", "trace_id", "observation_id", "session_id", "dataset_run_id",
           "config_id", "comment", "source", "environment", "metadata", "timestamp", "evaluator_name",
           "evaluator_version")
ALIASES = {
    "langfuse": {f: f"body.{_LANGFUSE_NAMES.get(f, f)}" for f in _FIELDS} | {"idempotency_key": "id"},
    "native": {f: f"body.{f}" for f in _FIELDS} | {"idempotency_key": "body.idempotency_key"},
}


def config_to_look_up(payload: dict[str, Any]) -> str | None:
    cid = payload.get("config_id")
    return cid if isinstance(cid, str) and 0 < len(cid) <= ID_MAX else None


def check(payload: dict[str, Any], config: ScoreConfigData | None, *, source: str) -> None:
    """Raise ``Invalid`` (every broken rule, fields as the client spelled them) if scoring would refuse this score.
    ``config``: the named config as scoring has it, None if it names none or scoring has no such config."""
    dt = payload.get("data_type")
    inp = ScoreInput(
        name=payload.get("name"), value=payload.get("value"),
        data_type=ScoreDataType(dt) if dt is not None else None, id=payload.get("id"),
        trace_id=payload.get("trace_id"), observation_id=payload.get("observation_id"),
        session_id=payload.get("session_id"), dataset_run_id=payload.get("dataset_run_id"),
        config_id=payload.get("config_id"), comment=payload.get("comment"), metadata=payload.get("metadata"),
        environment=payload.get("environment"), source=ScoreSource(payload.get("source", "API")),
        evaluator_name=payload.get("evaluator_name"), evaluator_version=payload.get("evaluator_version"),
        idempotency_key=payload.get("idempotency_key"), aliases=ALIASES.get(source, ALIASES["native"]),
    )
    build_score(inp, config, score_id=payload.get("id") or "intake", now=datetime.now(UTC),
                config_missing=bool(payload.get("config_id")) and config is None)


__all__ = ["Invalid", "check", "config_to_look_up"]
