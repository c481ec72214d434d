"""Bulk statements against the real database: one statement per batch whatever its size, every column type the
services use surviving the trip, upserts overwriting or keeping rows as asked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest_asyncio
from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tally_shared import bulk
from tally_shared.db import make_engine, make_session_factory

md = MetaData(schema="bulk_test")
things = Table(
    "things", md,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("x", Float),
    Column("cost", Numeric),
    Column("note", Text),
    Column("ref", Uuid),
    Column("tags", ARRAY(Text)),
    Column("data", JSONB),
    Column("body", LargeBinary),
    Column("at", DateTime(timezone=True)),
)


@pytest_asyncio.fixture
async def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url, pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA IF NOT EXISTS bulk_test"))
        await conn.run_sync(md.create_all)
        await conn.execute(things.delete())
    yield make_session_factory(engine)
    await engine.dispose()


def _row(i: int, n: int = 1) -> dict:  # type: ignore[type-arg]
    return {"project_id": "p", "id": f"t{i}", "n": n, "x": 1.5, "cost": Decimal("0.000001"), "note": "a\u00e9\u4e2d",
            "ref": uuid.UUID(int=i), "tags": ["a", "b"], "data": {"k": [1, None, "v"]},
            "body": bytes([0, 255, i % 256]),
            "at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}


async def test_every_type_survives_and_upsert_overwrites(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as s, s.begin():
        await bulk.upsert(s, things, [_row(i) for i in range(300)])
    async with sessions() as s, s.begin():
        result = await bulk.upsert(s, things, [_row(1, n=2), _row(300, n=2)], returning="id")
        assert result is not None and {r[0] for r in result} == {"t1", "t300"}
        assert await bulk.upsert(s, things, []) is None
    async with sessions() as s:
        rows = {r.id: r for r in (await s.execute(select(things))).all()}
    assert len(rows) == 301 and rows["t1"].n == 2 and rows["t0"].n == 1
    r = rows["t7"]
    assert (r.x, r.cost, r.note, r.ref, r.tags, r.data, r.body, r.at) == (
        1.5, Decimal("0.000001"), "a\u00e9\u4e2d", uuid.UUID(int=7), ["a", "b"], {"k": [1, None, "v"]},
        bytes([0, 255, 7]), datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))


async def test_do_nothing_and_custom_update(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as s, s.begin():
        await bulk.insert_rows(s, things, [{"project_id": "p", "id": "a", "n": 1}])
        res = await bulk.insert_rows(s, things, [{"project_id": "p", "id": "a", "n": 5},
                                                 {"project_id": "p", "id": "b", "n": 5}],
                                     conflict=["project_id", "id"], returning="id")
        assert {r[0] for r in res} == {"b"}  # "a" was there: left alone
        await bulk.insert_rows(s, things, [{"project_id": "p", "id": "a", "n": 5}], conflict=["project_id", "id"],
                               update='"n" = t."n" + EXCLUDED."n"')
    async with sessions() as s:
        assert (await s.execute(select(things.c.n).where(things.c.id == "a"))).scalar_one() == 6


async def test_statement_text_is_the_same_for_any_batch_size() -> None:
    one = bulk.insert_sql(things, ["project_id", "id", "n"], conflict=["project_id", "id"], update=["n"])
    again = bulk.insert_sql(things, ["project_id", "id", "n"], conflict=["project_id", "id"], update=["n"])
    assert one is again and ':rows' in str(one) and '"bulk_test"."things"' in str(one)


async def test_select_by_keys(sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as s, s.begin():
        await bulk.upsert(s, things, [_row(i) for i in range(5)])
        stmt = bulk.select_by_keys(things, ["project_id", "id"], ["id", "n"])
        rows = (await s.execute(stmt, {"project_id": ["p"], "id": ["t1", "t3", "zz"]})).all()
    assert sorted(r.id for r in rows) == ["t1", "t3"]
