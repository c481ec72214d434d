"""Blind review: which traces a reviewer may not read automated or peers' scores of right now. Queue-router decides
(it holds the leases and assignments); it is asked with the reviewer's own credentials on each read, so a lease
taken a moment ago already hides the scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from tally_shared.http import ApiError
from tally_shared.identity import Principal

CREDENTIAL_HEADERS = ("authorization", "x-tally-project")


@dataclass(frozen=True)
class Blind:
    """What the caller may see: ``user_id`` None means everything (leads, admins, API keys)."""

    user_id: str | None = None
    trace_ids: frozenset[str] = frozenset()

    def hides(self, trace_id: str | None) -> bool:
        return self.user_id is not None and trace_id is not None and trace_id in self.trace_ids

    def own(self, score: Mapping[str, Any], author_key: str = "author_user_id") -> bool:
        """A score the caller may read on a hidden trace: their own annotation."""
        return score.get("source") == "ANNOTATION" and score.get(author_key) == self.user_id


SEES_ALL = Blind()


class BlindPort(Protocol):
    async def blind_traces(self, creds: dict[str, str], user_id: str) -> frozenset[str]: ...


class HttpBlind:
    def __init__(self, base_url: str | None, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = (httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)
                        if base_url else None)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def blind_traces(self, creds: dict[str, str], user_id: str) -> frozenset[str]:
        if self._client is None:
            # Unknown which traces are blind: refuse rather than show scores a reviewer must not see.
            raise ApiError(503, "queue_router_unavailable", "blind review cannot be checked (no queue-router URL)")
        try:
            r = await self._client.get("/api/v1/review/blind-traces", headers=creds)
        except httpx.HTTPError as e:
            raise ApiError(503, "queue_router_unavailable", f"blind review cannot be checked: {e}") from None
        if r.status_code != 200:
            raise ApiError(503, "queue_router_unavailable", f"blind review cannot be checked: HTTP {r.status_code}")
        return frozenset(r.json().get("trace_ids", []))


class FakeBlind:
    """Blind traces per user id, held in memory (tests)."""

    def __init__(self) -> None:
        self.by_user: dict[str, set[str]] = {}

    async def blind_traces(self, creds: dict[str, str], user_id: str) -> frozenset[str]:
        return frozenset(self.by_user.get(user_id, set()))


async def blind_for(port: BlindPort, p: Principal, headers: Mapping[str, str]) -> Blind:
    """Only the reviewer role is ever blind; members (leads), admins and API keys see everything."""
    if p.role != "reviewer" or p.user_id is None:
        return SEES_ALL
    creds = {h: headers[h] for h in CREDENTIAL_HEADERS if h in headers}
    return Blind(p.user_id, await port.blind_traces(creds, p.user_id))
