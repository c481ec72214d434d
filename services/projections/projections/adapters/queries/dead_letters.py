"""SQL of the dead letters: storing what consumers refused, the project's list and one dead letter, and the
replay and discard transactions (rows locked while the originals are republished)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from projections.adapters.dead_letters import dead_letters as dl
from projections.domain.dead_letters import Filter, Scope
from tally_shared.deadletters import DeadLetter

_COLUMNS = [c for c in dl.c if c.name != "original"]
INSERT_CHUNK_BYTES = 8 * 1024 * 1024


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; these fields are for reading, the original keeps the exact bytes.
    return value.replace("\x00", "\ufffd") if value is not None else None


def scope_clause(scope: Scope) -> ColumnElement[bool]:
    if scope.everything:
        return dl.c.id.isnot(None)
    if scope.project_id is None:
        return dl.c.project_id.is_(None)
    return dl.c.project_id == scope.project_id


def clauses(scope: Scope, flt: Filter) -> list[ColumnElement[bool]]:
    out = [scope_clause(scope)]
    for col, value in ((dl.c.status, flt.status), (dl.c.consumer, flt.consumer), (dl.c.topic, flt.topic),
                       (dl.c.reason_code, flt.reason_code), (dl.c.event_id, flt.event_id)):
        if value is not None:
            out.append(col == value)
    if flt.ids is not None:
        out.append(dl.c.id.in_(list(flt.ids)))
    return out


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


class SqlDeadLetterReads:
    """Reads in the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def snapshot(self) -> None:
        await self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})

    async def page(self, scope: Scope, flt: Filter, *, offset: int, limit: int, head_bytes: int
                   ) -> list[dict[str, Any]]:
        """Summaries newest first, each with the first ``head_bytes`` of its original as ``head``."""
        rows = (await self.session.execute(
            select(*_COLUMNS, func.substring(dl.c.original, 1, head_bytes).label("head"))
            .where(and_(*clauses(scope, flt))).order_by(dl.c.failed_at.desc(), dl.c.id.desc())
            .offset(offset).limit(limit)
        )).all()
        return [_summary(r) | {"head": bytes(r.head or b"")} for r in rows]

    async def count(self, scope: Scope, flt: Filter) -> int:
        n: int = (await self.session.execute(
            select(func.count()).select_from(dl).where(and_(*clauses(scope, flt))))).scalar_one()
        return n

    async def count_by(self, scope: Scope, flt: Filter, column: str) -> dict[str, int]:
        """Counts per value of ``column`` (reason_code or status)."""
        col = dl.c[column]
        return dict((await self.session.execute(
            select(col, func.count()).where(and_(*clauses(scope, flt))).group_by(col))).all())

    async def get(self, scope: Scope, dead_letter_id: uuid.UUID) -> dict[str, Any] | None:
        """The summary with the original's bytes as ``original``."""
        row = (await self.session.execute(select(dl).where(scope_clause(scope), dl.c.id == dead_letter_id))).first()
        if row is None:
            return None
        return _summary(row) | {"original": bytes(row.original)}

    async def related(self, scope: Scope, event_id: str, but: str, limit: int) -> list[dict[str, Any]]:
        """The other dead letters of the same event, oldest first."""
        rel = (await self.session.execute(
            select(dl.c.id, dl.c.consumer, dl.c.reason_code, dl.c.status, dl.c.failed_at)
            .where(scope_clause(scope), dl.c.event_id == uuid.UUID(event_id), dl.c.id != uuid.UUID(but))
            .order_by(dl.c.failed_at).limit(limit))).all()
        return [{"id": str(r.id), "consumer": r.consumer, "reason_code": r.reason_code, "status": r.status,
                 "failed_at": r.failed_at} for r in rel]


class SqlDeadLetterChanges:
    """One transaction of the replay or discard commands (``SqlDeadLetters.transaction``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self, scope: Scope, flt: Filter, *, limit: int, skip_locked: bool) -> list[Any]:
        """The matching rows, oldest first, locked; without their originals (id, topic, partition, offset, key,
        event_type, original_truncated, original_size)."""
        return list((await self.session.execute(
            select(dl.c.id, dl.c.topic, dl.c.partition, dl.c.offset, dl.c.key, dl.c.event_type,
                   dl.c.original_truncated, dl.c.original_size)
            .where(*clauses(scope, flt)).order_by(dl.c.failed_at, dl.c.id).limit(limit)
            .with_for_update(skip_locked=skip_locked)
        )).all())

    async def originals(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        got = await self.session.execute(select(dl.c.id, dl.c.original).where(dl.c.id.in_(list(ids))))
        return {row.id: bytes(row.original) for row in got}

    async def mark_replayed(self, scope: Scope, chosen: Sequence[uuid.UUID],
                            origins: Sequence[tuple[str, int, int]], *, actor: str, now: datetime) -> int:
        """Marks the chosen rows, and every open dead letter of the same original messages, replayed."""
        same = [and_(dl.c.topic == t, dl.c.partition == p, dl.c.offset == o) for t, p, o in origins]
        same_message = and_(scope_clause(scope), dl.c.status == "open", or_(*same))
        result = await self.session.execute(
            update(dl).where(dl.c.id.in_(list(chosen)) | same_message)
            .values(status="replayed", status_at=now, status_by=actor, replay_count=dl.c.replay_count + 1)
            .returning(dl.c.id))
        return len(result.all())

    async def exists(self, scope: Scope, ids: Sequence[uuid.UUID] | None) -> bool:
        found = await self.session.execute(select(dl.c.id).where(*clauses(scope, Filter(None, ids=ids))))
        return found.first() is not None

    async def mark_discarded(self, scope: Scope, flt: Filter, *, limit: int, actor: str, now: datetime) -> int:
        """Marks up to ``limit`` matching dead letters not yet discarded (skipping those locked by others)."""
        ids = select(dl.c.id).where(*clauses(scope, flt), dl.c.status != "discarded").limit(limit) \
            .with_for_update(skip_locked=True).scalar_subquery()
        result = await self.session.execute(
            update(dl).where(dl.c.id.in_(ids))
            .values(status="discarded", status_at=now, status_by=actor).returning(dl.c.id))
        return len(result.all())


class SqlDeadLetters:
    """Writes, each in a transaction of its own."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlDeadLetterChanges]:
        async with self.sessions() as session, session.begin():
            yield SqlDeadLetterChanges(session)

    async def record(self, records: Sequence[DeadLetter]) -> int:
        """Stores dead letters in one transaction; a redelivered record (same id) changes nothing. Returns how
        many were new."""
        rows = [{
            "id": r.id, "project_id": _text(r.project), "consumer": _text(r.consumer), "topic": _text(r.topic),
            "partition": r.partition, "offset": r.offset, "event_id": r.event_id,
            "event_type": _text(r.event_type), "key": _text(r.key), "reason_code": _text(r.reason_code),
            "reason": _text(r.reason) or "", "original": r.original(), "original_size": r.original_size,
            "original_truncated": r.original_truncated, "failed_at": r.failed_at,
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
        async with self.sessions() as session, session.begin():
            for chunk in chunks:
                result = await session.execute(
                    pg_insert(dl).values(chunk).on_conflict_do_nothing().returning(dl.c.id))
                new += len(result.all())
        return new

    async def delete_settled(self, cutoff: datetime) -> int:
        """Forgets replayed and discarded dead letters whose status is older than ``cutoff``."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                delete(dl).where(dl.c.status != "open", dl.c.status_at < cutoff).returning(dl.c.id))
            return len(result.all())
