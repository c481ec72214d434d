"""Thin subscribers: decode (done by tally_shared.messaging), then hand over to the application handler."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from scoring.application.commands import handle_record_score
from scoring.application.datasets import record_run_from_trace
from scoring.application.deletion import handle_trace_deleted
from scoring.application.deps import Deps
from tally_shared.envelope import Envelope, Payload
from tally_shared.events import RecordScore, TraceDeleted, TraceIngested
from tally_shared.messaging import subscribe_batch
from tally_shared.topics import SCORE_COMMANDS, TRACES

TOPICS = (SCORE_COMMANDS, TRACES)

_DELETED = b'"type":"TraceDeleted"'


def wanted_trace_event(body: bytes) -> bool:
    # Scoring needs few of the trace stream's events: deletions (every envelope is serialised with its type among
    # the first fields) and trace events naming an experiment run (ingest writes only the fields it set). The rest
    # are skipped unparsed.
    return _DELETED in body[:160] or b'"dataset_run_name"' in body


def register(broker: KafkaBroker, deps: Deps, group_id: str) -> None:
    async def on_events(batch: list[tuple[Envelope, Payload]]) -> None:
        # Each event is its own transaction, claimed by event id, so re-applying part of a batch changes nothing.
        # An invalid score command raises PoisonMessage: the batch is split until it stands alone and is
        # dead-lettered; the commands before it were claimed and are skipped when re-applied.
        for env, payload in batch:
            if isinstance(payload, RecordScore):
                await handle_record_score(env, payload, deps, consumer=group_id)
            elif isinstance(payload, TraceDeleted):
                await handle_trace_deleted(env, payload, deps, consumer=group_id)
            elif isinstance(payload, TraceIngested):
                await record_run_from_trace(deps, env, payload)

    # One batch subscriber for both topics: scoring reads the whole trace stream for a few events (a per-message
    # subscriber would commit an offset for every trace it skips), and one consumer instead of two halves the
    # fixed cost of the group (its fetch loop polls the broker, which on Tansu costs per partition and poll, its
    # heartbeats, its offset commits) for a topic of rare commands.
    # Score commands are never prefiltered: every one is parsed.
    subscribe_batch(broker, list(TOPICS), group_id=group_id, handler=on_events, prefilter=wanted_trace_event,
                    prefilter_topics={TRACES.name})
