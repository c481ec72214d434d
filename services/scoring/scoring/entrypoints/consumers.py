"""Thin subscribers: decode (done by tally_shared.messaging), then hand over to the application handler."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from scoring.application.commands import handle_record_score
from scoring.application.datasets import record_run_from_trace
from scoring.application.deletion import handle_trace_deleted
from scoring.application.deps import Deps
from tally_shared.envelope import Envelope, Payload, PoisonMessage
from tally_shared.events import RecordScore, TraceDeleted, TraceIngested
from tally_shared.messaging import subscribe, subscribe_batch
from tally_shared.topics import SCORE_COMMANDS, TRACES

TOPICS = (SCORE_COMMANDS, TRACES)

_DELETED = b'"type":"TraceDeleted"'


def wanted_trace_event(body: bytes) -> bool:
    # Scoring needs few of the trace stream's events: deletions (every envelope is serialised with its type among
    # the first fields) and trace events naming an experiment run (ingest writes only the fields it set). The rest
    # are skipped unparsed.
    return _DELETED in body[:160] or b'"dataset_run_name"' in body


def register(broker: KafkaBroker, deps: Deps, group_id: str) -> None:
    async def on_record_score(env: Envelope, payload: Payload) -> None:
        if not isinstance(payload, RecordScore):
            raise PoisonMessage(f"expected RecordScore, got {type(payload).__name__}", "unknown_type")
        await handle_record_score(env, payload, deps, consumer=group_id)

    subscribe(broker, SCORE_COMMANDS, group_id=group_id, handler=on_record_score, types={"RecordScore"})

    async def on_traces(batch: list[tuple[Envelope, Payload]]) -> None:
        # Each event is its own transaction, claimed by event id, so re-applying part of a batch changes nothing.
        for env, payload in batch:
            if isinstance(payload, TraceDeleted):
                await handle_trace_deleted(env, payload, deps, consumer=group_id)
            elif isinstance(payload, TraceIngested):
                await record_run_from_trace(deps, env, payload)

    # A batch subscriber: scoring reads the whole trace stream for a few events, and a per-message subscriber would
    # commit an offset for every trace it skips. One subscriber per topic and group (two in one process would split
    # the topic's partitions between them).
    subscribe_batch(broker, [TRACES], group_id=group_id, handler=on_traces, prefilter=wanted_trace_event)
