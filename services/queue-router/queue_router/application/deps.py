"""What the application handlers are given: a unit of work per change, and the ports they ask."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from queue_router.adapters.rule_cache import RuleCache
from queue_router.adapters.scoring_api import ScoringPort
from queue_router.adapters.unit_of_work import UnitOfWorkFactory
from tally_shared.identity.store import IdentityStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    uow: UnitOfWorkFactory
    rules: RuleCache
    max_backfill_scan: int = 200_000
    scoring: ScoringPort | None = None
    identity: IdentityStore | None = None
    clock: Callable[[], datetime] = field(default=utcnow)


@dataclass
class Caller:
    """Who asks, as other services need to see them: scoring is asked with these credentials."""

    creds: dict[str, str]
