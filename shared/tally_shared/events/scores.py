"""Score configs, scores, and the command that asks scoring to record a score."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tally_shared.envelope import Payload, event
from tally_shared.events.ids import Id


class ScoreDataType(StrEnum):
    NUMERIC = "NUMERIC"
    CATEGORICAL = "CATEGORICAL"
    BOOLEAN = "BOOLEAN"
    TEXT = "TEXT"


class ScoreSource(StrEnum):
    ANNOTATION = "ANNOTATION"
    EVAL = "EVAL"
    API = "API"


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    value: float


class ScoreConfigData(BaseModel):
    """A full snapshot of one version of a score config."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    version: int = 1
    name: str
    data_type: ScoreDataType
    description: str | None = None
    guidelines: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    step: float | None = None
    categories: list[Category] | None = None
    multi_select: bool = False
    max_length: int | None = None
    is_archived: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


@event
class ScoreConfigCreated(Payload):
    event_type = "ScoreConfigCreated"
    config: ScoreConfigData


@event
class ScoreConfigUpdated(Payload):
    event_type = "ScoreConfigUpdated"
    config: ScoreConfigData


@event
class ScoreConfigArchived(Payload):
    event_type = "ScoreConfigArchived"
    config: ScoreConfigData


class ScoreData(BaseModel):
    """A score as recorded. Exactly one of trace/observation/session/dataset run item is the target
    (an observation score also names its trace)."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    name: str
    data_type: ScoreDataType
    value: float | None = None
    string_value: str | None = None
    # CATEGORICAL with multi_select: every chosen label; value is then None.
    string_values: list[str] | None = None
    trace_id: Id | None = None
    observation_id: Id | None = None
    session_id: Id | None = None
    dataset_run_id: Id | None = None
    config_id: Id | None = None
    config_version: int | None = None
    comment: str | None = None
    source: ScoreSource = ScoreSource.API
    author_user_id: Id | None = None
    evaluator_name: str | None = None
    evaluator_version: str | None = None
    queue_id: Id | None = None
    queue_item_id: Id | None = None
    environment: str | None = None
    metadata: dict[str, Any] | None = None
    timestamp: datetime


@event
class ScoreRecorded(Payload):
    event_type = "ScoreRecorded"
    score: ScoreData


@event
class ScoreUpdated(Payload):
    event_type = "ScoreUpdated"
    score: ScoreData


@event
class ScoreDeleted(Payload):
    event_type = "ScoreDeleted"
    score_id: Id
    trace_id: Id | None = None
    deleted_by: str | None = None


@event
class RecordScore(Payload):
    """A command from ingest (SDK score-create): scoring validates it, then records or dead-letters it."""

    event_type = "RecordScore"
    id: Id | None = None
    name: str = Field(min_length=1)
    value: Any = None
    data_type: ScoreDataType | None = None
    trace_id: Id | None = None
    observation_id: Id | None = None
    session_id: Id | None = None
    dataset_run_id: Id | None = None
    config_id: Id | None = None
    comment: str | None = None
    source: ScoreSource = ScoreSource.API
    environment: str | None = None
    metadata: dict[str, Any] | None = None
    timestamp: datetime | None = None
    idempotency_key: str | None = None
    evaluator_name: str | None = None
    evaluator_version: str | None = None
    # The config version ingest validated the score against: scoring validates against that same version.
    config_version: int | None = None
