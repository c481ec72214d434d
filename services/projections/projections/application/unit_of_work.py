"""The write side's unit of work: one transaction over the read models, the event claim in it, commit explicit.

A batch claims its event ids first (``processed_events``: a redelivered event claims nothing and is skipped), then
the projections write their rows; ``commit`` makes rows and claims durable together, and leaving the block without
it rolls both back. Writers hold the schema's apply lock *shared*: replicas write side by side (each owns its
partitions, and rows many traces share are written per partition), while the rebuild's swap takes it exclusive.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.statements import Statements
from tally_shared import claims
from tally_shared.db import alongside

CONSUMER = "projections"
T = TypeVar("T")

TraceKey = tuple[str, str]
_UUID_ORDER = attrgetter("int")  # UUID's own order, without its Python-level __lt__ per comparison
_BEGIN = text("SELECT pg_advisory_xact_lock_shared(hashtext(:k)), "
              "set_config('plan_cache_mode', 'force_custom_plan', true)")
# in the order of the (sorted) array: two transactions wanting the same slots take them in one order
_TRACE_SLOTS = text("SELECT count(pg_advisory_xact_lock(hashtext(:k), s)) FROM unnest(CAST(:slots AS int[])) AS s")


@dataclass
class BatchState:
    """What one projection leaves for the next within a batch."""

    # traces deleted (by this batch or before): nothing about them is written
    gone: set[TraceKey] = field(default_factory=set)
    # trace rows as this batch left them, and those whose filter dimensions changed (their scores re-count)
    trace_rows: dict[TraceKey, dict[str, Any]] = field(default_factory=dict)
    changed_dims: dict[TraceKey, dict[str, Any]] = field(default_factory=dict)
    # the partition each trace's event came from: the rollup shard its re-count goes to
    trace_shard: dict[TraceKey, int] = field(default_factory=dict)


class UnitOfWork:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], sql: Statements) -> None:
        self._sessions = sessions
        self.sql = sql
        self.state = BatchState()
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        assert self._session is not None, "use the unit of work inside `async with`"
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        self._session = self._sessions()
        await self._session.begin()
        self.state = BatchState()
        # A shared lock: writers never wait for each other, only for the rebuild's swap. And each lookup planned
        # for its actual key arrays: a generic plan cached while a table was small (or never analysed: autovacuum
        # may be off) can turn the batch's key lookups into a scan per key. One round trip for both.
        await self._session.execute(_BEGIN, {"k": self.sql.lock_key})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._session is not None
        try:
            await self._session.rollback()  # a no-op after commit
        finally:
            await self._session.close()
            self._session = None

    async def claim(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Record the ids as processed; returns those not processed before."""
        # sorted: two writers claiming overlapping ids (a partition changing hands) lock them in one order
        return await claims.claim(self.session, self.sql.t.processed, CONSUMER, sorted(set(ids), key=_UUID_ORDER))

    async def lock_trace_slots(self, slots: Iterable[int]) -> None:
        """Wait for (and hold until the end of the transaction) the given trace slots. A trace's slot is its
        partition of ``tally.traces``; every transaction that reads and then writes what belongs to a trace (its
        rows, its scores' dimensions, its tombstone) holds the slot first, so two of them never interleave on one
        trace, whichever topics, replicas or tasks their events came through."""
        wanted = sorted(set(slots))
        if wanted:
            await self.session.execute(_TRACE_SLOTS, {"k": self.sql.lock_key, "slots": wanted})

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        return await self.session.execute(stmt, params)

    async def overlapped(self, statement: Coroutine[Any, Any, T], work: Callable[[], None]) -> T:
        """Run ``statement`` (a coroutine of this unit of work's session) while ``work`` (plain computing that
        does not touch the session) runs here: ``tally_shared.db.alongside`` with the work as one step."""
        return await alongside(statement, _once(work))

    async def commit(self) -> None:
        await self.session.commit()


def _once(work: Callable[[], None]) -> Iterator[None]:
    work()
    yield None
