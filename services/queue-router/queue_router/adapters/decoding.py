"""The router's decoder: a ``TraceIngested`` is read straight from its bytes into the fields rules can see.

Routing reads a trace's name, tags, metadata, ids, environment, release, run and timestamp, and of each
observation its type, name, level, times, usage and cost. Inputs and outputs (most of a span's bytes) and every
other field are skipped by the JSON parser instead of being built into Python objects and validated: the full
decode cost about twice as much. Fields that are read are validated as ``TraceIngested`` validates them.

Anything else (scores, deletions, an envelope written another way, content holding NULs) goes through the shared
``tally_shared.envelope.decode``, which also names what is wrong with a poison message.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from queue_router.domain.events import RoutedTraceIngested
from tally_shared import content
from tally_shared.envelope import Envelope, Payload, decode
from tally_shared.events.traces import TraceIngested

_LEAN = ConfigDict(extra="ignore")


class _TraceEnvelope(BaseModel):
    model_config = _LEAN
    id: uuid.UUID
    type: Literal["TraceIngested"]
    version: Literal[1]
    occurred_at: datetime
    project: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=200)
    payload: RoutedTraceIngested


# Envelopes are written by orjson from the model, ``id`` then ``type``: the type is within the first bytes.
_TRACE_MARK = b'"type":"' + TraceIngested.event_type.encode() + b'"'


def decode_routed(raw: bytes, _partition: int = 0) -> tuple[Envelope, Payload]:
    if _TRACE_MARK in raw[:128] and not content.needs_clean(raw):
        try:
            lean = _TraceEnvelope.model_validate_json(raw)
        except ValidationError:
            pass  # the full decode says what is wrong with it
        else:
            env = Envelope.model_construct(id=lean.id, type=lean.type, version=lean.version,
                                           occurred_at=lean.occurred_at, project=lean.project, key=lean.key,
                                           payload={})
            return env, lean.payload
    return decode(raw)
