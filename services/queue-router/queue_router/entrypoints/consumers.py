"""The router's one subscriber: traces and scores in batches, each event handed to the handler of its class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.kafka import KafkaBroker

from queue_router.adapters.decoding import decode_routed
from queue_router.application.routing import Event, RouterDeps, route_batch
from queue_router.domain.events import RoutedTraceIngested
from tally_shared.envelope import Payload
from tally_shared.events.scores import ScoreDeleted, ScoreRecorded, ScoreUpdated
from tally_shared.events.traces import TraceDeleted, TraceIngested
from tally_shared.messaging import subscribe_batch
from tally_shared.topics import SCORES, TRACES

Batch = list[Event]
BatchHandler = Callable[[Batch], Awaitable[Any]]

# Every event the router applies; routing takes them together (one unit of work per batch).
ROUTED: tuple[type[Payload] | type[RoutedTraceIngested], ...] = (
    TraceIngested, RoutedTraceIngested, TraceDeleted, ScoreRecorded, ScoreUpdated, ScoreDeleted)


def handlers(deps: RouterDeps) -> dict[type[Payload] | type[RoutedTraceIngested], BatchHandler]:
    async def route(batch: Batch) -> None:
        await route_batch(batch, deps)

    return dict.fromkeys(ROUTED, route)


def dispatch(table: dict[type[Payload] | type[RoutedTraceIngested], BatchHandler]
             ) -> Callable[[Batch], Awaitable[None]]:
    """One batch in: each handler gets its events, in batch order; events of other classes are acknowledged."""

    async def handle(batch: Batch) -> None:
        by_handler: dict[BatchHandler, Batch] = {}
        for env, payload in batch:
            h = table.get(type(payload))
            if h is not None:
                by_handler.setdefault(h, []).append((env, payload))
        for h, events in by_handler.items():
            await h(events)

    return handle


_TYPE = b'"type":"'


def type_prefilter(classes: Sequence[type[Payload] | type[RoutedTraceIngested]]) -> Callable[[bytes], bool]:
    """Refuses, unparsed, a record whose envelope names another type (envelopes are written by orjson: ``type``
    comes within the first bytes). A record written another way is parsed."""
    names = frozenset(c.event_type.encode() for c in classes)

    def wanted(raw: bytes) -> bool:
        # One scan of the head per "type" key (usually one) and a set lookup, not a scan per wanted type.
        head = raw[:128]
        i = head.find(_TYPE)
        if i < 0:
            return True
        while i >= 0:
            start = i + len(_TYPE)
            end = head.find(b'"', start)
            if end < 0:
                return False
            if head[start:end] in names:
                return True
            i = head.find(_TYPE, end)
        return False

    return wanted


def register(broker: KafkaBroker, *, group_id: str, deps: RouterDeps, max_records: int) -> Any:
    table = handlers(deps)
    return subscribe_batch(broker, [TRACES, SCORES], group_id=group_id, handler=dispatch(table),
                           max_records=max_records, prefilter=type_prefilter(list(table)), decoder=decode_routed)
