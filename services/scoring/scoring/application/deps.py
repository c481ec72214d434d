from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scoring.adapters.config_cache import ConfigCache
from scoring.adapters.fast_pool import FastPool
from scoring.adapters.outbox import OutboxPublisher


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    sessions: async_sessionmaker[AsyncSession]
    outbox: OutboxPublisher
    fast: FastPool
    configs: ConfigCache = field(default_factory=ConfigCache)
    clock: Callable[[], datetime] = field(default=utcnow)


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
