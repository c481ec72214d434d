"""Events as the router reads them: ``TraceIngested`` with only the fields rules can see, as plain values
(``adapters.decoding`` builds it from the wire without the rest, and without a model per event).

A trace's fields and each observation's are dicts holding only the fields the event said (a field said as null is
present with None), as the merge needs them: enum fields as their values, an observation's times as epoch seconds,
the trace's timestamp as an aware datetime. ``from_payload`` gives the same form from the full ``TraceIngested``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from tally_shared.events.traces import ObservationData, TraceData, TraceIngested

# The trace fields rules can see, and the observation fields the summary keeps.
TRACE_FIELDS = ("name", "timestamp", "metadata", "tags", "user_id", "session_id", "release", "environment",
                "dataset_run_name")
OBSERVATION_FIELDS = ("type", "name", "level", "start_time", "end_time", "usage_details", "cost_details")


class RoutedEnvelope:
    """The envelope fields the router reads (what ``tally_shared.envelope.Envelope`` has, without its model)."""

    __slots__ = ("id", "key", "occurred_at", "payload", "project", "type", "version")

    def __init__(self, id: uuid.UUID, type: str, occurred_at: datetime, project: str, key: str) -> None:
        self.id = id
        self.type = type
        self.version = 1
        self.occurred_at = occurred_at
        self.project = project
        self.key = key
        self.payload: dict[str, Any] = {}


class RoutedTraceIngested:
    """``TraceIngested`` as the router reads it (not registered: only the router's decoder and ``from_payload``
    make it). ``trace``: its ``id`` and the fields of ``TRACE_FIELDS`` said (None when the event carries no trace
    part); ``observations``: one dict per observation, with ``id``, ``trace_id`` and the fields of
    ``OBSERVATION_FIELDS`` it said."""

    __slots__ = ("observations", "trace", "trace_id")
    event_type: ClassVar[str] = TraceIngested.event_type
    version: ClassVar[int] = TraceIngested.version

    def __init__(self, trace_id: str, trace: dict[str, Any] | None, observations: list[dict[str, Any]]) -> None:
        self.trace_id = trace_id
        self.trace = trace
        self.observations = observations


def trace_fields(t: TraceData) -> dict[str, Any]:
    said = t.__pydantic_fields_set__
    out: dict[str, Any] = {"id": t.id}
    out.update((name, getattr(t, name)) for name in TRACE_FIELDS if name in said)
    return out


def _value(e: Any) -> Any:
    return e if e is None or type(e) is str else e.value


def observation_fields(o: ObservationData) -> dict[str, Any]:
    said = o.__pydantic_fields_set__
    out: dict[str, Any] = {"id": o.id, "trace_id": o.trace_id}
    for name in OBSERVATION_FIELDS:
        if name not in said:
            continue
        v = getattr(o, name)
        if name in ("type", "level"):
            v = _value(v)
        elif name in ("start_time", "end_time"):
            v = v.timestamp() if v is not None else None
        out[name] = v
    return out


def from_payload(p: TraceIngested) -> RoutedTraceIngested:
    """The router's form of a fully decoded ``TraceIngested``."""
    return RoutedTraceIngested(p.trace_id, trace_fields(p.trace) if p.trace is not None else None,
                               [observation_fields(o) for o in p.observations])
