"""What a projection is: the read model it writes, the event classes it handles, and a handler of
(events, unit of work). The dispatcher (``application.handlers``) routes each event by its class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from projections.application.unit_of_work import TraceKey, UnitOfWork
from tally_shared.envelope import Payload
from tally_shared.records import Event

Handler = Callable[[list[Event], UnitOfWork], Awaitable[None]]


def no_traces(_e: Event) -> Iterable[str | None]:
    return ()


@dataclass(frozen=True)
class Projection:
    model: str
    handles: tuple[type[Payload], ...]
    apply: Handler
    # the traces an event is about: an event about a deleted trace is dropped
    traces_of: Callable[[Event], Iterable[str | None]] = no_traces
    # also runs on a batch with none of its own events (scores re-count when their trace's dimensions change)
    always: bool = False


def trace_keys(events: Iterable[Event], traces_of: Callable[[Event], Iterable[str | None]]) -> set[TraceKey]:
    return {(e.project, tid) for e in events for tid in traces_of(e) if tid}


async def by_keys(uow: UnitOfWork, stmt: Any, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows by (project_id, id), looked up with one array per key column (the primary-key index)."""
    wanted = set(keys)
    if not wanted:
        return {}
    res = await uow.execute(stmt, {"project_id": sorted({k[0] for k in wanted}), "id": sorted({k[1] for k in wanted})})
    out = {}
    for r in res.mappings():
        key = (r["project_id"], r["id"])
        if key in wanted:
            out[key] = dict(r)
    return out
