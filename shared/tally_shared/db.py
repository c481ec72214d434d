"""Database plumbing: engines from any PostgreSQL URL, and exactly-once effects for consumers.

Exactly-once: a consumer records the id of every event it applied in its own ``processed_events`` table, in the
same transaction as the effect. A redelivered event finds its id already there and changes nothing.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from tally_shared import content

# libpq's TLS options in a URL. SQLAlchemy hands URL options to asyncpg.connect as keywords, which has none of
# these (only ``ssl``), so ``async_url`` takes them out and ``ssl_argument`` turns them into that one argument.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SSL_OPTIONS = ("sslmode", "ssl", "sslrootcert", "sslcert", "sslkey")


def async_url(url: str) -> str:
    """Normalise ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://`` to the asyncpg driver. TLS
    options leave the URL: pass ``connect_args(url)`` to the engine, or they are not applied."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+asyncpg"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _SSL_OPTIONS]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def ssl_argument(url: str) -> str | ssl.SSLContext | None:
    """asyncpg's ``ssl`` argument for libpq's ``sslmode``/``sslrootcert``/``sslcert``/``sslkey`` in ``url``
    (``ssl=`` as SQLAlchemy's asyncpg URLs spell it is read as ``sslmode``).

    None when the URL says nothing: asyncpg then does as libpq does by default (``prefer``). A bare mode becomes
    asyncpg's mode of the same name, which follows libpq (``verify-*`` read ~/.postgresql/root.crt). With
    certificate files, an SSLContext: TLS is then always required (``allow``/``prefer`` included: a client
    certificate means the deployment has TLS), the server verified against ``sslrootcert`` for ``verify-ca``,
    also its host name for ``verify-full``, and for ``require`` when a root certificate is given (libpq does).
    """
    options = dict(parse_qsl(urlsplit(url).query))
    mode = options.get("sslmode") or options.get("ssl")
    if mode is not None and mode not in SSL_MODES:
        raise ValueError(f"sslmode={mode!r} in DATABASE_URL is not one of {', '.join(SSL_MODES)}")
    root, cert, key = options.get("sslrootcert"), options.get("sslcert"), options.get("sslkey")
    if mode == "disable" or not (root or cert):
        return mode
    if mode in ("verify-ca", "verify-full") or (root and mode in (None, "require")):
        # "system": the platform's trusted roots, as libpq spells it.
        context = ssl.create_default_context(cafile=None if root in (None, "system") else root)
        context.check_hostname = mode == "verify-full"
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key)
    return context


def connect_args(url: str, **extra: Any) -> dict[str, Any]:
    """``connect_args`` for a SQLAlchemy engine on ``async_url(url)``: the URL's TLS options, plus ``extra``."""
    args = dict(extra)
    ssl_arg = ssl_argument(url)
    if ssl_arg is not None:
        args["ssl"] = ssl_arg
    return args


def plain_url(url: str) -> str:
    """The same URL for libpq-style clients (``postgresql://``); asyncpg reads its TLS options itself, under
    libpq's name (``ssl=`` of SQLAlchemy URLs becomes ``sslmode=``)."""
    parts = urlsplit(url)
    query = urlencode([("sslmode" if k == "ssl" else k, v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(("postgresql", parts.netloc, parts.path, query, parts.fragment))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "tally") -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args(url, server_settings={"application_name": application_name}),
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
