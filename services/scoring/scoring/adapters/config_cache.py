"""Score configs by id, cached in-process so that recording a score needs no config read.

Safe to be stale: the fast write path inserts a score only if its config still has the version it was validated
against and is not archived (checked in the insert statement), and a score rejected against a cached config is
checked again against a fresh read before the rejection stands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scoring.adapters import repository
from tally_shared.events import ScoreConfigData


class ConfigCache:
    def __init__(self, ttl_seconds: float = 30.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, ScoreConfigData]] = {}

    async def get_many(self, sessions: async_sessionmaker[AsyncSession], project_id: str,
                       ids: Iterable[str | None]) -> dict[str, ScoreConfigData]:
        wanted = {i for i in ids if i}
        now = time.monotonic()
        out: dict[str, ScoreConfigData] = {}
        missing = []
        for cid in wanted:
            hit = self._entries.get((project_id, cid))
            if hit and hit[0] > now:
                out[cid] = hit[1]
            else:
                missing.append(cid)
        if missing:
            out |= await self.refresh(sessions, project_id, missing)
        return out

    async def refresh(self, sessions: async_sessionmaker[AsyncSession], project_id: str,
                      ids: Iterable[str]) -> dict[str, ScoreConfigData]:
        async with sessions() as s:
            found = await repository.get_configs(s, project_id, ids)
        self.put(project_id, found.values())
        return found

    def put(self, project_id: str, configs: Iterable[ScoreConfigData]) -> None:
        if len(self._entries) > self._max:
            self._entries.clear()
        expires = time.monotonic() + self._ttl
        for c in configs:
            self._entries[(project_id, c.id)] = (expires, c)
