"""Dead letters as a product surface: record what consumers refused, list it per project, replay it once the cause
is fixed, or discard it.

Replay republishes the original bytes, with their key, to their original topic. Consumers are idempotent by event
id: those that had applied the event skip it, the one that refused it tries again; if it refuses again, that is a
new dead letter (new offset) with the same event id. Every open dead letter of the same original message (one per
consumer that refused it) is marked replayed with it, since they all see the republished message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from projections.adapters.dead_letters import dead_letters as dl
from tally_shared.contracts.dead_letters import BULK_LIMIT
from tally_shared.deadletters import DeadLetter
from tally_shared.topics import ALL_TOPICS, DEAD_LETTER

log = logging.getLogger(__name__)

# Republish(topic, key, value, headers): returns once the broker acknowledged.
Republish = Callable[[str, bytes | None, bytes, dict[str, str]], Awaitable[None]]

REPLAYABLE_TOPICS = frozenset(t.name for t in ALL_TOPICS if t != DEAD_LETTER)
PREVIEW_CHARS = 500
INSERT_CHUNK_BYTES = 8 * 1024 * 1024
REPLAY_BYTES = 64 * 1024 * 1024


class NotFound(Exception):
    pass


class NotReplayable(Exception):
    pass


@dataclass(frozen=True)
class Scope:
    """Whose dead letters: one project's (the HTTP API), those of no project, or all (operators' command line)."""

    project_id: str | None = None
    everything: bool = False

    def clause(self) -> ColumnElement[bool]:
        if self.everything:
            return dl.c.id.isnot(None)
        if self.project_id is None:
            return dl.c.project_id.is_(None)
        return dl.c.project_id == self.project_id


@dataclass(frozen=True)
class Filter:
    status: str | None = "open"
    consumer: str | None = None
    topic: str | None = None
    reason_code: str | None = None
    event_id: uuid.UUID | None = None
    ids: Sequence[uuid.UUID] | None = None

    def clauses(self, scope: Scope) -> list[ColumnElement[bool]]:
        out = [scope.clause()]
        for col, value in ((dl.c.status, self.status), (dl.c.consumer, self.consumer), (dl.c.topic, self.topic),
                           (dl.c.reason_code, self.reason_code), (dl.c.event_id, self.event_id)):
            if value is not None:
                out.append(col == value)
        if self.ids is not None:
            out.append(dl.c.id.in_(list(self.ids)))
        return out


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; these fields are for reading, the original keeps the exact bytes.
    return value.replace("\x00", "\ufffd") if value is not None else None


# -- consumer side ---------------------------------------------------------------------------------------------------

async def record(sessions: async_sessionmaker[AsyncSession], records: Sequence[DeadLetter]) -> int:
    """Store dead letters; a redelivered record (same id) changes nothing. Returns how many were new."""
    if not records:
        return 0
    rows = [{
        "id": r.id, "project_id": _text(r.project), "consumer": _text(r.consumer), "topic": _text(r.topic),
        "partition": r.partition, "offset": r.offset, "event_id": r.event_id, "event_type": _text(r.event_type),
        "key": _text(r.key), "reason_code": _text(r.reason_code), "reason": _text(r.reason) or "",
        "original": r.original(), "original_size": r.original_size, "original_truncated": r.original_truncated,
        "failed_at": r.failed_at,
    } for r in {r.id: r for r in records}.values()]
    # statements of bounded size: an original may be megabytes
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        if chunks[-1] and size + len(row["original"]) > INSERT_CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += len(row["original"])
    new = 0
    async with sessions() as session, session.begin():
        for chunk in chunks:
            result = await session.execute(pg_insert(dl).values(chunk).on_conflict_do_nothing().returning(dl.c.id))
            new += len(result.all())
    return new


# -- reads -----------------------------------------------------------------------------------------------------------

def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id), "project_id": row.project_id, "consumer": row.consumer, "topic": row.topic,
        "partition": row.partition, "offset": row.offset,
        "event_id": str(row.event_id) if row.event_id else None, "event_type": row.event_type, "key": row.key,
        "reason_code": row.reason_code, "reason": row.reason, "failed_at": row.failed_at,
        "status": row.status, "status_at": row.status_at, "status_by": row.status_by,
        "replay_count": row.replay_count, "original_size": row.original_size,
        "original_truncated": row.original_truncated,
    }


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


_COLUMNS = [c for c in dl.c if c.name != "original"]


async def list_dead_letters(session: AsyncSession, scope: Scope, flt: Filter, *, page: int = 1,
                            limit: int = 50) -> dict[str, Any]:
    # one snapshot for the page and its counts, so that they agree while dead letters arrive
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    where = and_(*flt.clauses(scope))
    rows = (await session.execute(
        select(*_COLUMNS, func.substring(dl.c.original, 1, PREVIEW_CHARS * 4).label("head"))
        .where(where).order_by(dl.c.failed_at.desc(), dl.c.id.desc()).offset((page - 1) * limit).limit(limit)
    )).all()
    total = (await session.execute(select(func.count()).select_from(dl).where(where))).scalar_one()
    # counts by reason and by status over the same filter, less the dimension being counted
    by_reason_where = and_(*Filter(flt.status, flt.consumer, flt.topic, None, flt.event_id).clauses(scope))
    by_status_where = and_(*Filter(None, flt.consumer, flt.topic, flt.reason_code, flt.event_id).clauses(scope))
    by_reason: dict[str, int] = dict((await session.execute(
        select(dl.c.reason_code, func.count()).where(by_reason_where).group_by(dl.c.reason_code))).all())
    by_status: dict[str, int] = dict((await session.execute(
        select(dl.c.status, func.count()).where(by_status_where).group_by(dl.c.status))).all())
    data = [_summary(r) | {"preview": preview(bytes(r.head or b""))} for r in rows]
    return {"data": data, "meta": {"page": page, "limit": limit, "total": total},
            "counts": {"by_reason": by_reason, "by_status": by_status}}


async def get_dead_letter(session: AsyncSession, scope: Scope, dead_letter_id: uuid.UUID) -> dict[str, Any]:
    row = (await session.execute(select(dl).where(scope.clause(), dl.c.id == dead_letter_id))).first()
    if row is None:
        raise NotFound(str(dead_letter_id))
    out = _summary(row) | {"original": original_view(bytes(row.original), row.original_truncated)}
    related: list[dict[str, Any]] = []
    if row.event_id is not None:
        # the other refusals of the same event: other consumers, or earlier and later replays
        rel = (await session.execute(
            select(dl.c.id, dl.c.consumer, dl.c.reason_code, dl.c.status, dl.c.failed_at)
            .where(scope.clause(), dl.c.event_id == row.event_id, dl.c.id != row.id)
            .order_by(dl.c.failed_at).limit(50))).all()
        related = [{"id": str(r.id), "consumer": r.consumer, "reason_code": r.reason_code, "status": r.status,
                    "failed_at": r.failed_at} for r in rel]
    out["related"] = related
    return out


# -- commands --------------------------------------------------------------------------------------------------------

async def replay(sessions: async_sessionmaker[AsyncSession], republish: Republish, scope: Scope, flt: Filter, *,
                 actor: str, limit: int = BULK_LIMIT, single: bool = False) -> dict[str, Any]:
    """Republish the originals of the dead letters that match (each original message once), and mark them and
    every open dead letter of the same messages replayed. ``single``: one id, any status; NotFound if absent."""
    async with sessions() as session, session.begin():
        rows = (await session.execute(
            select(dl.c.id, dl.c.topic, dl.c.partition, dl.c.offset, dl.c.key, dl.c.event_type,
                   dl.c.original_truncated, dl.c.original_size)
            .where(*flt.clauses(scope)).order_by(dl.c.failed_at, dl.c.id).limit(limit)
            .with_for_update(skip_locked=not single)
        )).all()
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
        originals: dict[uuid.UUID, bytes] = {}
        if messages:
            got = await session.execute(select(dl.c.id, dl.c.original).where(
                dl.c.id.in_([r.id for r in messages.values()])))
            originals = {row.id: bytes(row.original) for row in got}

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
            now = datetime.now(UTC)
            chosen = [r.id for r in rows if (r.topic, r.partition, r.offset) in messages]
            origins = [and_(dl.c.topic == t, dl.c.partition == p, dl.c.offset == o) for t, p, o in messages]
            same_message = and_(scope.clause(), dl.c.status == "open", or_(*origins))
            result = await session.execute(
                update(dl).where(dl.c.id.in_(chosen) | same_message)
                .values(status="replayed", status_at=now, status_by=actor[:200],
                        replay_count=dl.c.replay_count + 1)
                .returning(dl.c.id))
            replayed = len(result.all())
    return {"replayed": replayed, "messages": len(messages), "skipped": skipped,
            "more": (cut or len(rows) == limit) and not single}


async def discard(sessions: async_sessionmaker[AsyncSession], scope: Scope, flt: Filter, *, actor: str,
                  limit: int = BULK_LIMIT, single: bool = False) -> dict[str, Any]:
    """Mark open dead letters discarded (kept, hidden from the open list). ``single``: NotFound if absent."""
    async with sessions() as session, session.begin():
        if single:
            exists = (await session.execute(select(dl.c.id).where(*Filter(None, ids=flt.ids).clauses(scope))))
            if exists.first() is None:
                raise NotFound(",".join(str(i) for i in flt.ids or ()))
        ids = select(dl.c.id).where(*flt.clauses(scope), dl.c.status != "discarded").limit(limit) \
            .with_for_update(skip_locked=True).scalar_subquery()
        result = await session.execute(
            update(dl).where(dl.c.id.in_(ids))
            .values(status="discarded", status_at=datetime.now(UTC), status_by=actor[:200]).returning(dl.c.id))
        n = len(result.all())
    return {"discarded": n, "more": n == limit and not single}


async def prune(sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta,
                now: datetime | None = None) -> int:
    """Forget replayed and discarded dead letters whose status is older than ``older_than``; open ones stay until
    someone acts on them."""
    cutoff = (now or datetime.now(UTC)) - older_than
    async with sessions() as session, session.begin():
        result = await session.execute(
            delete(dl).where(dl.c.status != "open", dl.c.status_at < cutoff).returning(dl.c.id))
        return len(result.all())


async def prune_forever(sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta,
                        every: float = 3600.0) -> None:
    """Background task of the service."""
    while True:
        try:
            await prune(sessions, older_than=older_than)
        except Exception:  # the next round tries again; pruning is housekeeping, never a reason to stop serving
            log.exception("pruning dead letters failed")
        await asyncio.sleep(every)
