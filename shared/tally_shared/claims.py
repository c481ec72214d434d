"""Exactly-once effects for consumers: the one event-claim implementation.

A consumer records the id of every event it applies in its own ``processed_events`` table, in the same transaction
as the effect. ``claim`` inserts a batch of ids in one statement (the ids as one array parameter) and returns those
that were not there: the events to apply now. A redelivered event finds its id already there and changes nothing;
a concurrent duplicate blocks on the primary key until the first transaction ends, then sees the conflict.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from tally_shared.bulk import qualified


def processed_events_table(metadata: MetaData, name: str = "processed_events") -> Table:
    """The table of applied event ids, in the metadata's schema. One row per (consumer, event)."""
    return Table(
        name,
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


_CLAIM: dict[str, TextClause] = {}
_RELEASE: dict[str, TextClause] = {}


def _claim_sql(table: Table) -> TextClause:
    stmt = _CLAIM.get(table.fullname)
    if stmt is None:
        stmt = _CLAIM[table.fullname] = text(
            f"INSERT INTO {qualified(table)} (consumer, event_id) "
            "SELECT :consumer, unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING RETURNING event_id")
    return stmt


async def claim(session: AsyncSession, table: Table, consumer: str, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Record ``ids`` as applied by ``consumer``; returns the ones not applied before (apply those now).

    Must run inside the transaction that applies the effect: if it rolls back, the claim goes with it."""
    unique = list(dict.fromkeys(ids))
    if not unique:
        return set()
    rows = await session.execute(_claim_sql(table), {"consumer": consumer, "ids": unique})
    return {r[0] for r in rows}


async def claim_one(session: AsyncSession, table: Table, consumer: str, event_id: uuid.UUID) -> bool:
    """``claim`` for one event: False if ``consumer`` applied it before."""
    return bool(await claim(session, table, consumer, [event_id]))


async def release(session: AsyncSession, table: Table, consumer: str, ids: Iterable[uuid.UUID]) -> None:
    """Forget claims: an event refused for a reason that can be fixed (then replayed from its dead letter) must be
    tried again, not skipped as a duplicate."""
    unique = list(dict.fromkeys(ids))
    if not unique:
        return
    stmt = _RELEASE.get(table.fullname)
    if stmt is None:
        stmt = _RELEASE[table.fullname] = text(
            f"DELETE FROM {qualified(table)} "  # noqa: S608 (our own table's name)
            "WHERE consumer = :consumer AND event_id = ANY(CAST(:ids AS uuid[]))")
    await session.execute(stmt, {"consumer": consumer, "ids": unique})
