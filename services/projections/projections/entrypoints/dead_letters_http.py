"""HTTP for the caller's project's dead letters: list and read (any member), replay and discard (admins)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projections.adapters.queries.dead_letters import SqlDeadLetterReads, SqlDeadLetters
from projections.application import dead_letters as app_dl
from projections.application.dead_letters import Filter, Republish, Scope
from projections.entrypoints.http import JSON, ReadRoute
from tally_shared.contracts.dead_letters import (
    DeadLetterDetail,
    DeadLetterPage,
    DeadLetterSelection,
    DiscardResult,
    ReplayResult,
)
from tally_shared.http import ApiError
from tally_shared.identity import CurrentPrincipal
from tally_shared.identity.auth import Principal

router = APIRouter(prefix="/api/v1/dead-letters", tags=["dead letters"], default_response_class=JSON,
                   route_class=ReadRoute)

Status = Literal["open", "replayed", "discarded", "all"]


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.runtime.sessions


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _sessions(request)() as session:
        yield session


def _reads(db: Annotated[AsyncSession, Depends(_session)]) -> SqlDeadLetterReads:
    return SqlDeadLetterReads(db)


def _store(request: Request) -> SqlDeadLetters:
    return SqlDeadLetters(_sessions(request))


Reads = Annotated[SqlDeadLetterReads, Depends(_reads)]


def republisher(request: Request) -> Republish:
    broker = request.app.state.runtime.broker

    async def republish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic=topic, key=key, headers=headers)

    return republish


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "only a project admin can replay or discard dead letters")


def _not_found(dead_letter_id: uuid.UUID) -> ApiError:
    return ApiError(404, "not_found", f"dead letter {dead_letter_id} not found in this project")


@router.get("", response_model=DeadLetterPage)
async def list_dead_letters(
    principal: CurrentPrincipal, reads: Reads,
    status: Status = "open",
    consumer: Annotated[str | None, Query(max_length=200)] = None,
    topic: Annotated[str | None, Query(max_length=200)] = None,
    reason_code: Annotated[str | None, Query(max_length=100)] = None,
    event_id: uuid.UUID | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """The project's dead letters, newest first, with counts by reason code and by status (each over the other
    filters). Each row has a text ``preview`` of the original; the whole original is in the single view."""
    flt = Filter(None if status == "all" else status, consumer, topic, reason_code, event_id)
    return await app_dl.list_dead_letters(reads, Scope(principal.project_id), flt, page=page, limit=limit)


@router.get("/{dead_letter_id}", response_model=DeadLetterDetail)
async def get_dead_letter(dead_letter_id: uuid.UUID, principal: CurrentPrincipal, reads: Reads) -> Any:
    """One dead letter with its original (``original.encoding``: json, text or base64) and the other dead letters
    of the same event (``related``)."""
    try:
        return await app_dl.get_dead_letter(reads, Scope(principal.project_id), dead_letter_id)
    except app_dl.NotFound:
        raise _not_found(dead_letter_id) from None


@router.post("/{dead_letter_id}/replay", response_model=ReplayResult)
async def replay_dead_letter(dead_letter_id: uuid.UUID, principal: CurrentPrincipal, request: Request) -> Any:
    """Republish the original to its topic (with its key). Consumers that had applied it skip it; the one that
    refused it tries again, and a new refusal is a new dead letter with the same event id."""
    _admin(principal)
    try:
        return await app_dl.replay(_store(request), republisher(request), Scope(principal.project_id),
                                   Filter(None, ids=[dead_letter_id]), actor=principal.actor, single=True)
    except app_dl.NotFound:
        raise _not_found(dead_letter_id) from None
    except app_dl.NotReplayable as exc:
        raise ApiError(409, "not_replayable", str(exc)) from None


@router.post("/{dead_letter_id}/discard", response_model=DiscardResult)
async def discard_dead_letter(dead_letter_id: uuid.UUID, principal: CurrentPrincipal, request: Request) -> Any:
    """Hide it from the open list (it is kept, with who discarded it and when)."""
    _admin(principal)
    try:
        return await app_dl.discard(_store(request), Scope(principal.project_id),
                                    Filter(None, ids=[dead_letter_id]), actor=principal.actor, single=True)
    except app_dl.NotFound:
        raise _not_found(dead_letter_id) from None


def _filter(selection: DeadLetterSelection) -> Filter:
    return Filter(selection.status, selection.consumer, selection.topic, selection.reason_code, selection.event_id,
                  selection.ids)


@router.post("/replay", response_model=ReplayResult)
async def replay_many(selection: DeadLetterSelection, principal: CurrentPrincipal, request: Request) -> Any:
    _admin(principal)
    return await app_dl.replay(_store(request), republisher(request), Scope(principal.project_id),
                               _filter(selection), actor=principal.actor, limit=selection.limit)


@router.post("/discard", response_model=DiscardResult)
async def discard_many(selection: DeadLetterSelection, principal: CurrentPrincipal, request: Request) -> Any:
    _admin(principal)
    return await app_dl.discard(_store(request), Scope(principal.project_id), _filter(selection),
                                actor=principal.actor, limit=selection.limit)
