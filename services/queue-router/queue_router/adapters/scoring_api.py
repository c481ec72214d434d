"""Scoring's HTTP API, asked with the caller's own credentials: which score configs exist, and which required
configs a reviewer has scored on an item. Scoring commits a score before answering its POST, so a score the
reviewer has just posted is seen here at once (no wait for its event)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import httpx

from queue_router.domain.errors import Unavailable

# The headers that carry who is calling; nothing else of the caller's request is forwarded.
CREDENTIAL_HEADERS = ("authorization", "x-tally-project")


def credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {h: headers[h] for h in CREDENTIAL_HEADERS if h in headers}


class ScoringPort(Protocol):
    async def missing_configs(self, creds: dict[str, str], config_ids: Iterable[str]) -> list[str]: ...

    async def scored_configs(self, creds: dict[str, str], *, object_type: str, object_id: str,
                             config_ids: Iterable[str], reviewer: str, authorless_ok: bool) -> set[str]: ...


_OBJECT_FILTER = {"TRACE": "trace_id", "SESSION": "session_id", "OBSERVATION": "observation_id"}


def _unavailable(e: Exception | str) -> Unavailable:
    return Unavailable("scoring_unavailable", f"could not check score configs with the scoring service: {e}")


class HttpScoring:
    def __init__(self, base_url: str | None, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = (httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)
                        if base_url else None)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Without scoring the rules on configs cannot be checked; refusing is safer than skipping them.
            raise _unavailable("TALLY_SCORING_URL is not set")
        return self._client

    async def _get(self, path: str, creds: dict[str, str], params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._http().get(path, headers=creds, params=params)
        except httpx.HTTPError as e:
            raise _unavailable(e) from None

    async def missing_configs(self, creds: dict[str, str], config_ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(config_ids))
        if not ids:
            return []
        answers = await asyncio.gather(*(self._get(f"/api/v1/score-configs/{i}", creds) for i in ids))
        missing = []
        for cid, r in zip(ids, answers, strict=True):
            if r.status_code == 404:
                missing.append(cid)
            elif r.status_code != 200:
                raise _unavailable(f"HTTP {r.status_code}")
            elif r.json().get("is_archived"):
                missing.append(cid)
        return missing

    async def scored_configs(self, creds: dict[str, str], *, object_type: str, object_id: str,
                             config_ids: Iterable[str], reviewer: str, authorless_ok: bool) -> set[str]:
        ids = list(dict.fromkeys(config_ids))
        if not ids:
            return set()
        params = {_OBJECT_FILTER.get(object_type, "trace_id"): object_id, "config_id": ",".join(ids), "limit": 500}
        r = await self._get("/api/v1/scores", creds, params)
        if r.status_code != 200:
            raise _unavailable(f"HTTP {r.status_code}")
        out: set[str] = set()
        for s in r.json().get("data", []):
            author = s.get("author_user_id")
            if author == reviewer or (authorless_ok and author is None):
                out.add(s.get("config_id"))
        return out & set(ids)


class FakeScoring:
    """Configs and scores held in memory (tests)."""

    def __init__(self) -> None:
        self.configs: set[str] = set()
        # (object_id, config_id, author)
        self.scores: set[tuple[str, str, str | None]] = set()

    async def missing_configs(self, creds: dict[str, str], config_ids: Iterable[str]) -> list[str]:
        return [c for c in dict.fromkeys(config_ids) if c not in self.configs]

    async def scored_configs(self, creds: dict[str, str], *, object_type: str, object_id: str,
                             config_ids: Iterable[str], reviewer: str, authorless_ok: bool) -> set[str]:
        ids = set(config_ids)
        return {c for o, c, a in self.scores
                if o == object_id and c in ids and (a == reviewer or (authorless_ok and a is None))}
