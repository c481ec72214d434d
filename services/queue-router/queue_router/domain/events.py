"""Events as the router reads them: ``TraceIngested`` with only the fields rules can see (``adapters.decoding``
builds it from the wire without the rest)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tally_shared.envelope import Payload
from tally_shared.events.ids import MAX_ID_LENGTH
from tally_shared.events.traces import Level, ObservationType, TraceIngested

_LEAN = ConfigDict(extra="ignore")


class RoutedTrace(BaseModel):
    """``TraceData`` as rules see it."""

    model_config = _LEAN
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    name: str | None = None
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    user_id: str | None = None
    session_id: str | None = None
    release: str | None = None
    environment: str | None = None
    dataset_run_name: str | None = None


class RoutedObservation(BaseModel):
    """``ObservationData`` as rules see it (type and level validated as their enums, kept as their values)."""

    model_config = ConfigDict(extra="ignore", use_enum_values=True)
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    type: ObservationType | None = None
    name: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    level: Level | None = None
    usage_details: dict[str, float] | None = None
    cost_details: dict[str, float] | None = None


class RoutedTraceIngested(Payload):
    """``TraceIngested`` as the router reads it (not registered: only this decoder makes it)."""

    model_config = _LEAN
    event_type: ClassVar[str] = TraceIngested.event_type
    version: ClassVar[int] = TraceIngested.version

    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    trace: RoutedTrace | None = None
    observations: list[RoutedObservation] = Field(default_factory=list)
