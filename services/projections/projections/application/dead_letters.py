"""Dead letters as a product surface: record what consumers refused, list it per project, replay it once the cause
is fixed, or discard it.

Replay republishes the original bytes, with their key, to their original topic. Consumers are idempotent by event
id: those that had applied the event skip it, the one that refused it tries again; if it refuses again, that is a
new dead letter (new offset) with the same event id. Every open dead letter of the same original message (one per
consumer that refused it) is marked replayed with it, since they all see the republished message.

The SQL is ``adapters/queries/dead_letters.py``; here: what a list counts, how an original is shown, which
messages a replay republishes (each once, within a memory budget) and what it marks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.queries.dead_letters import SqlDeadLetters
from projections.domain.dead_letters import Filter, Scope
from tally_shared.contracts.dead_letters import BULK_LIMIT
from tally_shared.deadletters import DeadLetter
from tally_shared.topics import ALL_TOPICS, DEAD_LETTER

__all__ = ["Filter", "Scope"]

log = logging.getLogger(__name__)

# Republish(topic, key, value, headers): returns once the broker acknowledged.
Republish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]

REPLAYABLE_TOPICS = frozenset(t.name for t in ALL_TOPICS if t != DEAD_LETTER)
PREVIEW_CHARS = 500
REPLAY_BYTES = 64 * 1024 * 1024
RELATED = 50


class NotFound(Exception):
    pass


class NotReplayable(Exception):
    pass


class DeadLetterReads(Protocol):
    async def snapshot(self) -> None: ...

    async def page(self, scope: Scope, flt: Filter, *, offset: int, limit: int, head_bytes: int
                   ) -> list[dict[str, Any]]: ...

    async def count(self, scope: Scope, flt: Filter) -> int: ...

    async def count_by(self, scope: Scope, flt: Filter, column: str) -> dict[str, int]: ...

    async def get(self, scope: Scope, dead_letter_id: uuid.UUID) -> dict[str, Any] | None: ...

    async def related(self, scope: Scope, event_id: str, but: str, limit: int) -> list[dict[str, Any]]: ...


class DeadLetterChanges(Protocol):
    async def lock(self, scope: Scope, flt: Filter, *, limit: int, skip_locked: bool) -> list[Any]: ...

    async def originals(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bytes]: ...

    async def mark_replayed(self, scope: Scope, chosen: Sequence[uuid.UUID],
                            origins: Sequence[tuple[str, int, int]], *, actor: str, now: datetime) -> int: ...

    async def exists(self, scope: Scope, ids: Sequence[uuid.UUID] | None) -> bool: ...

    async def mark_discarded(self, scope: Scope, flt: Filter, *, limit: int, actor: str, now: datetime) -> int: ...


class DeadLetterStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[DeadLetterChanges]: ...


# -- consumer side ---------------------------------------------------------------------------------------------------

async def record(sessions: async_sessionmaker[AsyncSession], records: Sequence[DeadLetter]) -> int:
    """Store dead letters; a redelivered record (same id) changes nothing. Returns how many were new."""
    if not records:
        return 0
    return await SqlDeadLetters(sessions).record(records)


# -- reads -----------------------------------------------------------------------------------------------------------

def original_view(raw: bytes, truncated: bool) -> dict[str, Any]:
    """The original as JSON when it is JSON, else as text when it is UTF-8, else as base64."""
    if not truncated:
        try:
            return {"encoding": "json", "json": orjson.loads(raw)}
        except orjson.JSONDecodeError:
            pass
    try:
        return {"encoding": "text", "text": raw.decode()}
    except UnicodeDecodeError:
        return {"encoding": "base64", "base64": base64.b64encode(raw).decode()}


def preview(raw: bytes, limit: int = PREVIEW_CHARS) -> str:
    return raw[: limit * 4].decode(errors="replace")[:limit]


async def list_dead_letters(store: DeadLetterReads, scope: Scope, flt: Filter, *, page: int = 1,
                            limit: int = 50) -> dict[str, Any]:
    # one snapshot for the page and its counts, so that they agree while dead letters arrive
    await store.snapshot()
    rows = await store.page(scope, flt, offset=(page - 1) * limit, limit=limit, head_bytes=PREVIEW_CHARS * 4)
    total = await store.count(scope, flt)
    # counts by reason and by status over the same filter, less the dimension being counted
    by_reason = await store.count_by(scope, Filter(flt.status, flt.consumer, flt.topic, None, flt.event_id),
                                     "reason_code")
    by_status = await store.count_by(scope, Filter(None, flt.consumer, flt.topic, flt.reason_code, flt.event_id),
                                     "status")
    data = [{k: v for k, v in r.items() if k != "head"} | {"preview": preview(r["head"])} for r in rows]
    return {"data": data, "meta": {"page": page, "limit": limit, "total": total},
            "counts": {"by_reason": by_reason, "by_status": by_status}}


async def get_dead_letter(store: DeadLetterReads, scope: Scope, dead_letter_id: uuid.UUID) -> dict[str, Any]:
    row = await store.get(scope, dead_letter_id)
    if row is None:
        raise NotFound(str(dead_letter_id))
    out = row | {"original": original_view(row["original"], row["original_truncated"])}
    # the other refusals of the same event: other consumers, or earlier and later replays
    out["related"] = (await store.related(scope, row["event_id"], row["id"], RELATED)
                      if row["event_id"] is not None else [])
    return out


# -- commands --------------------------------------------------------------------------------------------------------

async def replay(store: DeadLetterStore, republish: Republish, scope: Scope, flt: Filter, *,
                 actor: str, limit: int = BULK_LIMIT, single: bool = False) -> dict[str, Any]:
    """Republish the originals of the dead letters that match (each original message once), and mark them and
    every open dead letter of the same messages replayed. ``single``: one id, any status; NotFound if absent."""
    async with store.transaction() as tx:
        rows = await tx.lock(scope, flt, limit=limit, skip_locked=not single)
        if single and not rows:
            raise NotFound(",".join(str(i) for i in flt.ids or ()))
        messages: dict[tuple[str, int, int], Any] = {}
        skipped: list[dict[str, str]] = []
        budget_left = REPLAY_BYTES
        cut = False
        for r in rows:
            if r.topic not in REPLAYABLE_TOPICS or r.original_truncated:
                why = "the original was too large to keep whole" if r.original_truncated else \
                    f"{r.topic!r} is not a topic Tally consumes"
                if single:
                    raise NotReplayable(why)
                skipped.append({"id": str(r.id), "reason": why})
                continue
            origin = (r.topic, r.partition, r.offset)
            if origin in messages:
                continue
            if messages and r.original_size > budget_left:
                cut = True  # the originals of one call stay within memory bounds; the rest on the next call
                break
            messages[origin] = r
            budget_left -= r.original_size
        originals = await tx.originals([r.id for r in messages.values()]) if messages else {}

        def headers(r: Any) -> dict[str, str]:
            # No content-type: FastStream would decode a JSON-typed body before the subscriber sees it, and an
            # original that is not JSON would then fail forever instead of becoming a dead letter again.
            out = {"tally-replay-of": str(r.id)}
            if r.event_type:
                out["event-type"] = r.event_type
            return out

        # All at once (the producer keeps the call order within a partition); a failure marks none of them.
        await asyncio.gather(*(republish(r.topic, r.key.encode() if r.key is not None else None, originals[r.id],
                                         headers(r)) for r in messages.values()))
        replayed = 0
        if messages:
            chosen = [r.id for r in rows if (r.topic, r.partition, r.offset) in messages]
            replayed = await tx.mark_replayed(scope, chosen, list(messages), actor=actor[:200], now=datetime.now(UTC))
    return {"replayed": replayed, "messages": len(messages), "skipped": skipped,
            "more": (cut or len(rows) == limit) and not single}


async def discard(store: DeadLetterStore, scope: Scope, flt: Filter, *, actor: str,
                  limit: int = BULK_LIMIT, single: bool = False) -> dict[str, Any]:
    """Mark open dead letters discarded (kept, hidden from the open list). ``single``: NotFound if absent."""
    async with store.transaction() as tx:
        if single and not await tx.exists(scope, flt.ids):
            raise NotFound(",".join(str(i) for i in flt.ids or ()))
        n = await tx.mark_discarded(scope, flt, limit=limit, actor=actor[:200], now=datetime.now(UTC))
    return {"discarded": n, "more": n == limit and not single}


async def prune(sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta,
                now: datetime | None = None) -> int:
    """Forget replayed and discarded dead letters whose status is older than ``older_than``; open ones stay until
    someone acts on them."""
    return await SqlDeadLetters(sessions).delete_settled((now or datetime.now(UTC)) - older_than)


async def prune_forever(sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta,
                        every: float = 3600.0) -> None:
    """Background task of the service."""
    while True:
        try:
            await prune(sessions, older_than=older_than)
        except Exception:  # the next round tries again; pruning is housekeeping, never a reason to stop serving
            log.exception("pruning dead letters failed")
        await asyncio.sleep(every)
