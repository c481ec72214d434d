"""Traces and observations.

A ``TraceIngested`` event carries everything one request said about one trace: the trace's own fields (or none)
and any number of observations. Creates and partial updates have the same shape: a field absent from the
payload is "not said", a field present (even as null) is set. Consumers merge per field, the later
``occurred_at`` winning.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tally_shared.envelope import Payload, event
from tally_shared.events.ids import MAX_ID_LENGTH


class ObservationType(StrEnum):
    SPAN = "SPAN"
    GENERATION = "GENERATION"
    EVENT = "EVENT"
    AGENT = "AGENT"
    TOOL = "TOOL"
    CHAIN = "CHAIN"
    RETRIEVER = "RETRIEVER"
    EVALUATOR = "EVALUATOR"
    EMBEDDING = "EMBEDDING"
    GUARDRAIL = "GUARDRAIL"


class Level(StrEnum):
    DEBUG = "DEBUG"
    DEFAULT = "DEFAULT"
    WARNING = "WARNING"
    ERROR = "ERROR"


class TraceData(BaseModel):
    """Fields of a trace. Only ``id`` is required; unset fields are not part of this update."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    name: str | None = None
    timestamp: datetime | None = None
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    user_id: str | None = None
    session_id: str | None = None
    release: str | None = None
    version: str | None = None
    environment: str | None = None
    public: bool | None = None
    # Experiment link: a trace produced by running a dataset item in a dataset run.
    dataset_run_name: str | None = None
    dataset_item_id: str | None = None
    dataset_name: str | None = None
    dataset_id: str | None = None


class ObservationData(BaseModel):
    """Fields of an observation (span, generation, event, tool call, ...). Unset fields are not updated."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    type: ObservationType | None = None
    name: str | None = None
    parent_observation_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    completion_start_time: datetime | None = None
    level: Level | None = None
    status_message: str | None = None
    model: str | None = None
    model_parameters: dict[str, Any] | None = None
    usage_details: dict[str, float] | None = None
    cost_details: dict[str, float] | None = None
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] | None = None
    version: str | None = None
    environment: str | None = None
    # The prompt (of a prompt registry, e.g. Langfuse's) a generation was made from.
    prompt_name: str | None = None
    prompt_version: int | None = None


@event
class TraceIngested(Payload):
    event_type = "TraceIngested"
    version = 1

    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    trace: TraceData | None = None
    observations: list[ObservationData] = Field(default_factory=list)
    source: str = Field(default="native", description="otel | langfuse | native")


@event
class TraceDeleted(Payload):
    """A trace was deleted on request. Keyed by the trace id on ``tally.traces``, so it is ordered after every
    ``TraceIngested`` of that trace. Consumers remove the trace with its observations, scores and pending queue
    items, and keep a tombstone: the deletion is final, whatever arrives for that id afterwards or on a rebuild."""

    event_type = "TraceDeleted"
    version = 1

    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
