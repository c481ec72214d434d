"""Event claims against the real database: a redelivered event changes nothing, a failed effect records nothing,
a batch claims only the ids not seen before, and claims live in the table's own schema."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tally_shared.claims import claim, claim_one, processed_events_table, release
from tally_shared.db import make_engine, make_session_factory

md = MetaData(schema="once_test")
counters = Table("counters", md, Column("name", String, primary_key=True), Column("n", Integer, nullable=False))
processed = processed_events_table(md)
other = processed_events_table(MetaData(schema="once_test_other"))


@pytest.fixture
async def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=5)
    async with engine.begin() as conn:
        for schema in ("once_test", "once_test_other"):
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        await conn.run_sync(md.create_all)
        await conn.run_sync(other.metadata.create_all)
        await conn.execute(counters.delete())
        await conn.execute(counters.insert().values(name="c", n=0))
    yield make_session_factory(engine)
    await engine.dispose()


async def apply_once(sessions: async_sessionmaker[AsyncSession], consumer: str, event_id: uuid.UUID,
                     effect: Callable[[AsyncSession], Awaitable[Any]]) -> bool:
    """What a consumer does: claim and apply in one transaction."""
    async with sessions() as session, session.begin():
        if not await claim_one(session, processed, consumer, event_id):
            return False
        await effect(session)
    return True


async def _increment(session: AsyncSession) -> None:
    await session.execute(counters.update().values(n=counters.c.n + 1))


async def _count(sessions) -> int:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return int((await s.execute(select(counters.c.n))).scalar_one())


async def test_redelivery_changes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()
    assert await apply_once(sessions, "c1", eid, _increment) is True
    assert await apply_once(sessions, "c1", eid, _increment) is False
    assert await _count(sessions) == 1
    # Another consumer applying the same event is a separate effect.
    assert await apply_once(sessions, "c2", eid, _increment) is True
    assert await _count(sessions) == 2


async def test_concurrent_duplicates_apply_once(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()
    results = await asyncio.gather(*(apply_once(sessions, "c1", eid, _increment) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await _count(sessions) == 1


async def test_failed_effect_records_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()

    async def boom(session: AsyncSession) -> None:
        await _increment(session)
        raise RuntimeError("db went away")

    with pytest.raises(RuntimeError):
        await apply_once(sessions, "c1", eid, boom)
    assert await _count(sessions) == 0
    assert await apply_once(sessions, "c1", eid, _increment) is True
    assert await _count(sessions) == 1


async def test_claim_returns_only_new_ids(sessions) -> None:  # type: ignore[no-untyped-def]
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with sessions() as s, s.begin():
        assert await claim(s, processed, "batch", [a, b]) == {a, b}
    async with sessions() as s, s.begin():
        assert await claim(s, processed, "batch", [b, c, c]) == {c}
        assert await claim(s, processed, "batch", []) == set()


async def test_claims_are_per_schema_and_can_be_released(sessions) -> None:  # type: ignore[no-untyped-def]
    a = uuid.uuid4()
    async with sessions() as s, s.begin():
        assert await claim(s, processed, "c", [a]) == {a}
        # The same consumer name in another service's schema is another table.
        assert await claim(s, other, "c", [a]) == {a}
        await release(s, processed, "c", [a])
    async with sessions() as s, s.begin():
        assert await claim(s, processed, "c", [a]) == {a}
        assert await claim(s, other, "c", [a]) == set()
