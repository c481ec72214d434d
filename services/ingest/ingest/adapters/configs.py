"""Score configs, looked up through scoring's HTTP API (ingest never reads scoring's tables), with a small TTL
cache so the score path costs one lookup per config and ``ttl_seconds``, not one per score.

The caller's own credentials are forwarded: scoring answers for the caller's project only (a config of another
project does not exist for it). A config that does not exist is not cached (one created a moment later must be
usable at once); a stale cached config is harmless, because the command carries the version intake validated
against and scoring validates against that same version.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from tally_shared.events import ScoreConfigData


class ScoringUnavailable(Exception):
    """Scoring did not answer (or answered 5xx): the score can be neither accepted nor refused now."""


class ConfigLookup(Protocol):
    async def get(self, project_id: str, config_id: str, headers: dict[str, str]) -> ScoreConfigData | None: ...

    async def close(self) -> None: ...


class HttpConfigLookup:
    def __init__(self, base_url: str, *, ttl_seconds: float = 10.0, max_entries: int = 10_000,
                 timeout_seconds: float = 2.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_seconds, transport=transport)
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, ScoreConfigData]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[ScoreConfigData | None]] = {}

    async def get(self, project_id: str, config_id: str, headers: dict[str, str]) -> ScoreConfigData | None:
        key = (project_id, config_id)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:  # one lookup per config at a time, however many requests wait for it
            return await asyncio.shield(pending)
        fut: asyncio.Future[ScoreConfigData | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            config = await self._fetch(config_id, headers)
            fut.set_result(config)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through their own await
            raise
        finally:
            del self._inflight[key]
        if config is not None:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._ttl, config)
        return config

    async def _fetch(self, config_id: str, headers: dict[str, str]) -> ScoreConfigData | None:
        try:
            r = await self._client.get(f"/api/v1/score-configs/{quote(config_id, safe='')}", headers=headers)
        except httpx.HTTPError as exc:
            raise ScoringUnavailable(f"scoring unreachable: {type(exc).__name__}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ScoringUnavailable(f"scoring answered {r.status_code} looking up a score config")
        data = r.json()
        data.pop("project_id", None)
        try:
            return ScoreConfigData.model_validate(data)
        except ValidationError:
            raise ScoringUnavailable("scoring answered a score config this ingest does not understand") from None

    async def close(self) -> None:
        await self._client.aclose()
