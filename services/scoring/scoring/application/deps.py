from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scoring.adapters.config_cache import ConfigCache
from scoring.adapters.fast_pool import FastPool
from scoring.application.uow import UnitOfWork
from tally_shared.outbox import Outbox


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """What scoring's handlers depend on (built once, in bootstrap.py)."""

    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    fast: FastPool
    configs: ConfigCache = field(default_factory=ConfigCache)
    clock: Callable[[], datetime] = field(default=utcnow)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.outbox)


@dataclass(frozen=True)
class Actor:
    """Who asks, as far as scoring's rules care. API keys act as admins of their project."""

    project_id: str
    user_id: str | None = None
    is_admin: bool = True
    can_configure: bool = True
    can_review: bool = True

    @property
    def name(self) -> str:
        return self.user_id or "api"


@dataclass(frozen=True)
class EventClaim:
    """The event a command handler applies: claimed by ``consumer`` in the transaction that applies it."""

    consumer: str
    event_id: uuid.UUID
