"""The router's decoder: a ``TraceIngested`` is read straight from its bytes into the fields rules can see.

Routing reads a trace's name, tags, metadata, ids, environment, release, run and timestamp, and of each
observation its type, name, level, times, usage and cost. pydantic validates the envelope against ``TypedDict``s
of only those fields (``extra="ignore"``), checked as ``TraceIngested`` checks them, and gives plain dicts: inputs,
outputs and every other field are skipped by the JSON parser, and no model is built per event or observation
(building the lean models cost about as much again as the parse).

Anything else (scores, deletions, an envelope written another way, content holding NULs, a trace the lean form
refuses) goes through the shared ``tally_shared.envelope.decode``, which also names what is wrong with a poison
message; a ``TraceIngested`` decoded that way is handed over in the same lean form (``from_payload``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from queue_router.domain.events import RoutedEnvelope, RoutedTraceIngested, from_payload
from tally_shared import content
from tally_shared.envelope import Envelope, Payload, decode
from tally_shared.events.ids import MAX_ID_LENGTH
from tally_shared.events.traces import Level, ObservationType, TraceIngested

_LEAN = ConfigDict(extra="ignore")
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
# The enums' values (as the full models validate them), kept as str.
_Type = Literal["SPAN", "GENERATION", "EVENT", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR", "EMBEDDING",
                "GUARDRAIL"]
_Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]
assert set(_Type.__args__) == {t.value for t in ObservationType}  # type: ignore[attr-defined]
assert set(_Level.__args__) == {lv.value for lv in Level}  # type: ignore[attr-defined]


class _Trace(TypedDict):
    __pydantic_config__ = _LEAN  # type: ignore[misc]
    id: _Id
    name: NotRequired[str | None]
    timestamp: NotRequired[datetime | None]
    metadata: NotRequired[dict[str, Any] | None]
    tags: NotRequired[list[str] | None]
    user_id: NotRequired[str | None]
    session_id: NotRequired[str | None]
    release: NotRequired[str | None]
    environment: NotRequired[str | None]
    dataset_run_name: NotRequired[str | None]


class _Observation(TypedDict):
    __pydantic_config__ = _LEAN  # type: ignore[misc]
    id: _Id
    trace_id: _Id
    type: NotRequired[_Type | None]
    name: NotRequired[str | None]
    start_time: NotRequired[datetime | None]
    end_time: NotRequired[datetime | None]
    level: NotRequired[_Level | None]
    usage_details: NotRequired[dict[str, float] | None]
    cost_details: NotRequired[dict[str, float] | None]


class _Payload(TypedDict):
    __pydantic_config__ = _LEAN  # type: ignore[misc]
    trace_id: _Id
    trace: NotRequired[_Trace | None]
    observations: NotRequired[list[_Observation]]


class _TraceEnvelope(TypedDict):
    __pydantic_config__ = _LEAN  # type: ignore[misc]
    id: uuid.UUID
    type: Literal["TraceIngested"]
    version: Literal[1]
    occurred_at: datetime
    project: Annotated[str, Field(min_length=1, max_length=64)]
    key: Annotated[str, Field(min_length=1, max_length=200)]
    payload: _Payload


_VALIDATE = TypeAdapter(_TraceEnvelope).validate_json
# Envelopes are written by orjson from the model, ``id`` then ``type``: the type is within the first bytes.
_TRACE_MARK = b'"type":"' + TraceIngested.event_type.encode() + b'"'


def _lean(raw: bytes) -> tuple[RoutedEnvelope, RoutedTraceIngested]:
    d = _VALIDATE(raw)
    p = d["payload"]
    observations: list[Any] = p.get("observations", [])
    for o in observations:  # times as epoch seconds, as the summary keeps them
        if "start_time" in o:
            v = o["start_time"]
            o["start_time"] = v.timestamp() if v is not None else None
        if "end_time" in o:
            v = o["end_time"]
            o["end_time"] = v.timestamp() if v is not None else None
    env = RoutedEnvelope(d["id"], TraceIngested.event_type, d["occurred_at"], d["project"], d["key"])
    return env, RoutedTraceIngested(p["trace_id"], p.get("trace"), observations)  # type: ignore[arg-type]


def decode_routed(raw: bytes, _partition: int = 0
                  ) -> tuple[Envelope | RoutedEnvelope, Payload | RoutedTraceIngested]:
    if _TRACE_MARK in raw[:128] and not content.needs_clean(raw):
        try:
            return _lean(raw)
        except ValidationError:
            pass  # the full decode says what is wrong with it
    env, payload = decode(raw)
    if type(payload) is TraceIngested:
        return env, from_payload(payload)
    return env, payload
