"""JSON in and out: Langfuse-compatible (camelCase) and native (snake_case) shapes of scores and configs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scoring.adapters.repository import StoredScore
from scoring.domain.errors import Invalid, Problem
from scoring.domain.scores import ScoreInput
from scoring.entrypoints.common import iso
from tally_shared.events import ScoreConfigData, ScoreData, ScoreDataType, ScoreSource

# snake_case (domain) -> camelCase (Langfuse API)
CAMEL = {
    "id": "id", "name": "name", "value": "value", "data_type": "dataType", "trace_id": "traceId",
    "observation_id": "observationId", "session_id": "sessionId", "dataset_run_id": "datasetRunId",
    "config_id": "configId", "comment": "comment", "metadata": "metadata", "environment": "environment",
    "timestamp": "timestamp", "source": "source", "author_user_id": "authorUserId",
    "evaluator_name": "evaluatorName", "evaluator_version": "evaluatorVersion", "queue_id": "queueId",
    "queue_item_id": "queueItemId", "idempotency_key": "idempotencyKey", "min_value": "minValue",
    "max_value": "maxValue", "is_archived": "isArchived", "multi_select": "multiSelect",
    "max_length": "maxLength", "categories": "categories", "description": "description",
    "guidelines": "guidelines", "step": "step",
}
SNAKE = {v: k for k, v in CAMEL.items()}

_STRING_FIELDS = ("id", "trace_id", "observation_id", "session_id", "dataset_run_id", "config_id", "comment",
                  "environment", "author_user_id", "evaluator_name", "evaluator_version", "queue_id",
                  "queue_item_id", "idempotency_key", "name")


def score_input(item: Any, *, camel: bool, allow_author: bool) -> ScoreInput:
    """Parse one score object as a client sent it; Invalid names fields as the client spelled them."""
    aliases = CAMEL if camel else {}
    if not isinstance(item, dict):
        raise Invalid.one("body", "type", "each score must be a JSON object")
    data = {(SNAKE.get(k, k) if camel else k): v for k, v in item.items()}
    problems: list[Problem] = []

    def fld(name: str) -> str:
        return aliases.get(name, name)

    known = set(_STRING_FIELDS) | {"value", "data_type", "metadata", "timestamp", "source"}
    if not camel:
        for k in data:
            if k not in known:
                problems.append(Problem(k, "unknown_field", "not a score field"))
    for name in _STRING_FIELDS:
        v = data.get(name)
        if v is not None and not isinstance(v, str):
            problems.append(Problem(fld(name), "type", "must be a string"))
    if "author_user_id" in data and data["author_user_id"] is not None and not allow_author:
        data["author_user_id"] = None  # people always score as themselves; the handler sets the author
    data_type = None
    if data.get("data_type") is not None:
        try:
            data_type = ScoreDataType(data["data_type"])
        except ValueError:
            problems.append(Problem(fld("data_type"), "enum",
                                    f"one of {', '.join(t.value for t in ScoreDataType)}"))
    source = ScoreSource.API
    if data.get("source") is not None:
        try:
            source = ScoreSource(str(data["source"]).upper())
        except ValueError:
            problems.append(Problem(fld("source"), "enum", "one of API, ANNOTATION, EVAL"))
    ts = None
    if data.get("timestamp") is not None:
        try:
            ts = datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
        except ValueError:
            problems.append(Problem(fld("timestamp"), "datetime", "must be an ISO 8601 datetime"))
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        if camel:
            metadata = {"value": metadata}  # Langfuse accepts any JSON as metadata
        else:
            problems.append(Problem("metadata", "type", "must be an object"))
    if problems:
        raise Invalid(problems)
    return ScoreInput(
        name=data.get("name"), value=data.get("value"), data_type=data_type, id=data.get("id"),
        trace_id=data.get("trace_id"), observation_id=data.get("observation_id"), session_id=data.get("session_id"),
        dataset_run_id=data.get("dataset_run_id"), config_id=data.get("config_id"), comment=data.get("comment"),
        metadata=metadata, environment=data.get("environment"), timestamp=ts, source=source,
        author_user_id=data.get("author_user_id"), evaluator_name=data.get("evaluator_name"),
        evaluator_version=data.get("evaluator_version"), queue_id=data.get("queue_id"),
        queue_item_id=data.get("queue_item_id"), idempotency_key=data.get("idempotency_key"), aliases=aliases,
    )


def display_value(sc: ScoreData) -> Any:
    """The v3 polymorphic value: number, boolean, or string."""
    if sc.data_type == ScoreDataType.NUMERIC:
        return sc.value
    if sc.data_type == ScoreDataType.BOOLEAN:
        return bool(sc.value)
    if sc.string_values is not None:
        return ", ".join(sc.string_values)
    return sc.string_value or ""


def score_v3(project_id: str, st: StoredScore, groups: set[str]) -> dict[str, Any]:
    sc = st.score
    out: dict[str, Any] = {
        "id": sc.id, "projectId": project_id, "name": sc.name, "dataType": sc.data_type.value,
        "value": display_value(sc), "source": sc.source.value, "timestamp": iso(sc.timestamp),
        "environment": sc.environment or "default", "createdAt": iso(st.created_at), "updatedAt": iso(st.updated_at),
    }
    if "details" in groups:
        out |= {"comment": sc.comment, "configId": sc.config_id, "configVersion": sc.config_version,
                "metadata": sc.metadata, "evaluatorName": sc.evaluator_name,
                "evaluatorVersion": sc.evaluator_version}
    if "subject" in groups:
        if sc.observation_id:
            subject = {"kind": "observation", "id": sc.observation_id, "traceId": sc.trace_id}
        elif sc.trace_id:
            subject = {"kind": "trace", "id": sc.trace_id}
        elif sc.session_id:
            subject = {"kind": "session", "id": sc.session_id}
        else:
            subject = {"kind": "experiment", "id": sc.dataset_run_id or ""}
        out["subject"] = subject
    if "annotation" in groups:
        out |= {"authorUserId": sc.author_user_id, "queueId": sc.queue_id, "queueItemId": sc.queue_item_id}
    return out


def score_v1(project_id: str, st: StoredScore) -> dict[str, Any]:
    """The classic Langfuse Score (GET /api/public/v2/scores, /api/public/scores/{id})."""
    sc = st.score
    out: dict[str, Any] = {
        "id": sc.id, "projectId": project_id, "traceId": sc.trace_id, "observationId": sc.observation_id,
        "sessionId": sc.session_id, "datasetRunId": sc.dataset_run_id, "name": sc.name,
        "dataType": sc.data_type.value, "source": sc.source.value, "timestamp": iso(sc.timestamp),
        "createdAt": iso(st.created_at), "updatedAt": iso(st.updated_at), "authorUserId": sc.author_user_id,
        "comment": sc.comment, "metadata": sc.metadata, "configId": sc.config_id,
        "configVersion": sc.config_version, "queueId": sc.queue_id, "environment": sc.environment or "default",
    }
    if sc.data_type != ScoreDataType.TEXT:
        out["value"] = sc.value if sc.value is not None else 0.0
    if sc.data_type != ScoreDataType.NUMERIC:
        out["stringValue"] = display_value(sc) if sc.data_type != ScoreDataType.BOOLEAN else sc.string_value
    return out


def score_native(project_id: str, st: StoredScore) -> dict[str, Any]:
    return {
        **st.score.model_dump(mode="json"), "project_id": project_id, "revision": st.revision,
        "created_at": iso(st.created_at), "updated_at": iso(st.updated_at),
    }


def config_public(project_id: str, c: ScoreConfigData) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": c.id, "name": c.name, "projectId": project_id, "dataType": c.data_type.value,
        "isArchived": c.is_archived, "minValue": c.min_value, "maxValue": c.max_value,
        "categories": [cat.model_dump() for cat in c.categories] if c.categories is not None else None,
        "description": c.description, "createdAt": iso(c.created_at or now), "updatedAt": iso(c.updated_at or now),
        # Tally extensions (ignored by Langfuse clients):
        "version": c.version, "guidelines": c.guidelines, "step": c.step, "multiSelect": c.multi_select,
        "maxLength": c.max_length,
    }


def config_native(project_id: str, c: ScoreConfigData) -> dict[str, Any]:
    return {**c.model_dump(mode="json"), "project_id": project_id}
