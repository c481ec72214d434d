"""Database plumbing: engines from any PostgreSQL URL, and exactly-once effects for consumers.

Exactly-once: a consumer records the id of every event it applied in its own ``processed_events`` table, in the
same transaction as the effect. A redelivered event finds its id already there and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from tally_shared import content


def async_url(url: str) -> str:
    """Normalise ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://`` to the asyncpg driver."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+asyncpg"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("sslmode",)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def plain_url(url: str) -> str:
    """The same URL for libpq-style clients (``postgresql://``)."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "tally") -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": application_name}},
        # jsonb prints 1e308 as 309 digits; the standard library would read that back as a Python integer no
        # response encoder writes (one such value made every list holding it answer 500).
        json_deserializer=content.loads_stored,
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def processed_events_table(metadata: MetaData) -> Table:
    """The table of applied event ids, in the metadata's schema. One row per (consumer, event)."""
    return Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim_event(session: AsyncSession, table: Table, consumer: str, event_id: uuid.UUID) -> bool:
    """Record ``event_id`` as applied by ``consumer``; False if it already was.

    Must run inside the transaction that applies the effect. A concurrent duplicate blocks on the primary key
    until the first transaction ends, then sees the conflict.
    """
    stmt = (
        pg_insert(table)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    )
    return (await session.execute(stmt)).first() is not None


async def claim_events(
    session: AsyncSession, table: Table, consumer: str, event_ids: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    """Batch form of ``claim_event``: returns the ids not applied before (the ones to apply now)."""
    rows: list[dict[str, Any]] = [{"consumer": consumer, "event_id": eid} for eid in dict.fromkeys(event_ids)]
    if not rows:
        return set()
    stmt = pg_insert(table).values(rows).on_conflict_do_nothing().returning(table.c.event_id)
    return {r[0] for r in (await session.execute(stmt)).all()}


async def apply_once(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    consumer: str,
    event_id: uuid.UUID,
    effect: Callable[[AsyncSession], Awaitable[Any]],
) -> bool:
    """Run ``effect`` and record ``event_id`` in one transaction. Returns False (and does nothing) for an
    event this consumer already applied."""
    async with sessions() as session, session.begin():
        if not await claim_event(session, table, consumer, event_id):
            return False
        await effect(session)
    return True
