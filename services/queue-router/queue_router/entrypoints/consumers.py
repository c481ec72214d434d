"""The router's one subscriber: traces and scores, in batches, handed to the routing handler."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker

from queue_router.application.routing import RouterDeps, route_batch
from tally_shared.envelope import Envelope, Payload
from tally_shared.messaging import subscribe_batch
from tally_shared.topics import SCORES, TRACES

ROUTED_TYPES = frozenset(("TraceIngested", "TraceDeleted", "ScoreRecorded", "ScoreUpdated", "ScoreDeleted"))


def register(broker: KafkaBroker, *, group_id: str, deps: RouterDeps, max_records: int) -> Any:
    async def handle(batch: list[tuple[Envelope, Payload]]) -> None:
        wanted = [(e, p) for e, p in batch if e.type in ROUTED_TYPES]
        if wanted:
            await route_batch(wanted, deps)

    return subscribe_batch(broker, [TRACES, SCORES], group_id=group_id, handler=handle, max_records=max_records)
