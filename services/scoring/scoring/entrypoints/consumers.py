"""Thin subscribers: decode (done by tally_shared.messaging), then hand over to the application handler."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from scoring.application.commands import handle_record_score
from scoring.application.deletion import handle_trace_deleted
from scoring.application.deps import Deps
from tally_shared.envelope import Envelope, Payload, PoisonMessage
from tally_shared.events import RecordScore, TraceDeleted
from tally_shared.messaging import subscribe
from tally_shared.topics import SCORE_COMMANDS, TRACES

TOPICS = (SCORE_COMMANDS, TRACES)
_DELETED = b'"type":"TraceDeleted"'


def _is_deletion(body: bytes) -> bool:
    # Every envelope is serialised with its type among the first fields (tally_shared.envelope, ingest's own
    # encoder): scoring skips the trace stream's TraceIngested events without decoding them.
    return _DELETED in body[:160]


def register(broker: KafkaBroker, deps: Deps, group_id: str) -> None:
    async def on_record_score(env: Envelope, payload: Payload) -> None:
        if not isinstance(payload, RecordScore):
            raise PoisonMessage(f"expected RecordScore, got {type(payload).__name__}")
        await handle_record_score(env, payload, deps, consumer=group_id)

    subscribe(broker, SCORE_COMMANDS, group_id=group_id, handler=on_record_score, types={"RecordScore"})

    async def on_trace_deleted(env: Envelope, payload: Payload) -> None:
        assert isinstance(payload, TraceDeleted)
        await handle_trace_deleted(env, payload, deps, consumer=group_id)

    subscribe(broker, TRACES, group_id=group_id, handler=on_trace_deleted, types={"TraceDeleted"},
              accept_raw=_is_deletion)
