"""Database plumbing: engines from any PostgreSQL URL. (Exactly-once effects for consumers: ``tally_shared.claims``.)"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import text
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


def make_engine(url: str, *, pool_size: int = 10, application_name: str = "tally",
                pre_ping: bool = True) -> AsyncEngine:
    """``pre_ping``: test each connection with a round trip when it leaves the pool, so that a request never
    meets a connection the server dropped (a restart). A consumer's engine can go without: its batch is retried
    on a connection error, and the failure invalidates every older connection of the pool (SQLAlchemy), so the
    retry gets fresh ones; that saves a round trip per transaction."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
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


T = TypeVar("T")


async def alongside(statement: Coroutine[Any, Any, T], work: Iterator[object]) -> T:
    """Run ``statement`` (a coroutine of a session that is its alone meanwhile) while steps of ``work`` (plain
    computing that does not touch that session) run here, until the statement is done or the work is: the
    statement is sent first, so the database executes it while this process computes, and between two steps the
    event loop sends what the statement has ready and takes in its replies. The rest of ``work`` is left for the
    caller. Whatever happens to ``work``, the statement is waited for before this returns or raises."""
    task = asyncio.ensure_future(statement)
    try:
        await asyncio.sleep(0)  # the task's first step: the statement goes out before the work starts
        for _ in work:
            # a turn of the loop: the statement's I/O (not a wait for an event: the work goes on meanwhile)
            await asyncio.sleep(0)
            if task.done():
                break
    except BaseException:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the work's own error is the one raised
        raise
    return await task
