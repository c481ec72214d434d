"""The one batch subscriber over every topic the read models need."""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker

from projections.application.handlers import CONSUMED_TOPICS, Deps, apply_batch
from tally_shared.envelope import Envelope, Payload
from tally_shared.messaging import subscribe_batch


def register(broker: KafkaBroker, deps: Deps, *, group_id: str, max_records: int) -> Any:
    async def handle(batch: list[tuple[Envelope, Payload]]) -> None:
        await apply_batch(batch, deps)

    return subscribe_batch(broker, CONSUMED_TOPICS, group_id=group_id, handler=handle, max_records=max_records)
