"""Fixtures: the queue-router app on the real broker and database, started once per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from queue_router import MIGRATIONS, SCHEMA
from queue_router.testing import Service, start_service
from tally_shared.migrations import upgrade


@pytest.fixture(scope="session")
def qr_db(identity_db: str) -> str:
    upgrade(MIGRATIONS, identity_db, SCHEMA)
    return identity_db


@pytest.fixture(scope="module")
async def svc(qr_db: str, kafka_bootstrap: str) -> AsyncIterator[Service]:
    async for s in start_service(qr_db, kafka_bootstrap):
        yield s
