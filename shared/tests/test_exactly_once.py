"""apply_once against the real database: a redelivered event changes nothing, a failed effect records nothing."""

import asyncio
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tally_shared.db import (
    apply_once,
    claim_events,
    make_engine,
    make_session_factory,
    processed_events_table,
)

md = MetaData(schema="once_test")
counters = Table("counters", md, Column("name", String, primary_key=True), Column("n", Integer, nullable=False))
processed = processed_events_table(md)


@pytest.fixture
async def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=5)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA IF NOT EXISTS once_test"))
        await conn.run_sync(md.create_all)
        await conn.execute(counters.delete())
        await conn.execute(counters.insert().values(name="c", n=0))
    yield make_session_factory(engine)
    await engine.dispose()


async def _increment(session: AsyncSession) -> None:
    await session.execute(counters.update().values(n=counters.c.n + 1))


async def _count(sessions) -> int:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return int((await s.execute(select(counters.c.n))).scalar_one())


async def test_redelivery_changes_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()
    assert await apply_once(sessions, processed, "c1", eid, _increment) is True
    assert await apply_once(sessions, processed, "c1", eid, _increment) is False
    assert await _count(sessions) == 1
    # Another consumer applying the same event is a separate effect.
    assert await apply_once(sessions, processed, "c2", eid, _increment) is True
    assert await _count(sessions) == 2


async def test_concurrent_duplicates_apply_once(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()
    results = await asyncio.gather(*(apply_once(sessions, processed, "c1", eid, _increment) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await _count(sessions) == 1


async def test_failed_effect_records_nothing(sessions) -> None:  # type: ignore[no-untyped-def]
    eid = uuid.uuid4()

    async def boom(session: AsyncSession) -> None:
        await _increment(session)
        raise RuntimeError("db went away")

    with pytest.raises(RuntimeError):
        await apply_once(sessions, processed, "c1", eid, boom)
    assert await _count(sessions) == 0
    assert await apply_once(sessions, processed, "c1", eid, _increment) is True
    assert await _count(sessions) == 1


async def test_claim_events_returns_only_new_ids(sessions) -> None:  # type: ignore[no-untyped-def]
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with sessions() as s, s.begin():
        assert await claim_events(s, processed, "batch", [a, b]) == {a, b}
    async with sessions() as s, s.begin():
        assert await claim_events(s, processed, "batch", [b, c, c]) == {c}
