"""0004: summaries written in typed columns read back the same from ``doc``, and the downgrade restores them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
from alembic import command

from queue_router import MIGRATIONS, SCHEMA
from queue_router.adapters.stores import summary_from_row
from tally_shared.db import plain_url
from tally_shared.migrations import alembic_config, upgrade

OLD_ROWS = """
INSERT INTO queue_router.trace_summaries (project_id, trace_id, has_trace, name, timestamp, tags, metadata,
  environment, user_id, has_error, latency, total_cost, total_tokens, observation_types, observation_names, state)
VALUES ('p', 't', true, 'chat ✓', '2026-11-01T00:00:00Z', ARRAY['a', 'b'], '{"k": {"x": [1, 2.5]}}', 'prod', 'u1',
        true, 1.5, 0.25, 12, ARRAY['TOOL'], ARRAY['search'],
        '{"f": [1.0, null, null, null, null, null, null, null, null],
          "o": {"o1": ["TOOL", "search", "ERROR", 1.0, 2.5, 0.25, null, null, 12, 1.0]}}'),
       ('p', 'bare', false, null, null, null, null, null, null, false, null, null, null, null, null, '{}')
"""


def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain_url(url))
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_rows_survive_the_upgrade_and_the_downgrade(make_database: Callable[[], str]) -> None:
    url = make_database()
    upgrade(MIGRATIONS, url, SCHEMA, "0003_shared_outbox")
    _fetch(url, OLD_ROWS)
    before = [dict(r) for r in _fetch(url, "SELECT * FROM queue_router.trace_summaries ORDER BY trace_id")]

    upgrade(MIGRATIONS, url, SCHEMA)
    bare, full = (summary_from_row(r) for r in _fetch(
        url, "SELECT * FROM queue_router.trace_summaries ORDER BY trace_id"))
    assert (full.name, full.tags, full.metadata, full.environment, full.user_id, full.release) == (
        "chat ✓", ["a", "b"], {"k": {"x": [1, 2.5]}}, "prod", "u1", None)
    assert (full.has_trace, full.has_error, full.latency, full.total_cost, full.total_tokens) == (
        True, True, 1.5, 0.25, 12.0)
    assert (full.observation_types, full.observation_names) == (["TOOL"], ["search"])
    assert full.state["o"]["o1"][:3] == ["TOOL", "search", "ERROR"] and full.timestamp is not None
    assert (bare.has_trace, bare.name, bare.tags, bare.state, bare.observation_types) == (False, None, None, {}, [])

    command.downgrade(alembic_config(MIGRATIONS, url, SCHEMA), "0003_shared_outbox")
    after = [dict(r) for r in _fetch(url, "SELECT * FROM queue_router.trace_summaries ORDER BY trace_id")]
    assert after == before
