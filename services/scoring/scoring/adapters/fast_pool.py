"""A small asyncpg pool for the one-statement write path of new scores.

The shared SQLAlchemy engine pings every connection on checkout and the default asyncpg pool resets session state
on release: two extra round trips that would double a single score's database time. This pool's connections only
ever run self-contained statements (no session state, no transactions left open), so neither is needed.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from tally_shared.db import plain_url


class _PlainConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


class FastPool:
    def __init__(self, database_url: str, size: int = 10) -> None:
        self._url = plain_url(database_url)
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._url, min_size=1, max_size=self._size, connection_class=_PlainConnection,
                        server_settings={"application_name": "tally-scoring-fast"},
                    )
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)
