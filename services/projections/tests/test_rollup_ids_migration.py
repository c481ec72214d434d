"""0012: rollup rows keep their counts under the hashed key, with the ids the service computes; the downgrade
restores the text key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from alembic import command

from projections import MIGRATIONS, SCHEMA
from projections.domain.rollup import row_ids
from tally_shared.db import plain_url
from tally_shared.migrations import alembic_config, upgrade

BEFORE = "0011_payload_bytes"
OLD_ROWS = """
INSERT INTO projections.score_rollup (project_id, granularity, dim_kind, dim_value, name, bucket, source, config_id,
  data_type, value_key, shard, n, n_value, sum, sum_sq)
VALUES ('p', 'day', '', '', 'q', '2026-11-01T00:00:00Z', 'EVAL', '', 'NUMERIC', '0.1', 0, 2, 2, 0.3, 0.05),
       ('p', 'day', 'tag', 'näive ✓ ''x\\y', 'q', '2026-11-01T00:00:00Z', 'EVAL', '', 'NUMERIC', '0.1', 3, 1, 1,
        0.1, 0.01),
       ('p', 'hour', '', '', 'tone', '2026-11-01T05:00:00Z', 'ANNOTATION', 'cfg', 'CATEGORICAL', 'rude', 1, 4, 0,
        0, 0)
"""
SELECT = "SELECT * FROM projections.score_rollup ORDER BY project_id, granularity, dim_kind, bucket, shard"


def _fetch(url: str, sql: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(plain_url(url))
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_rollup_rows_get_the_services_ids_and_come_back_on_downgrade(make_database: Callable[[], str]) -> None:
    url = make_database()
    upgrade(MIGRATIONS, url, SCHEMA, BEFORE)
    _fetch(url, OLD_ROWS)
    before = _fetch(url, SELECT)

    upgrade(MIGRATIONS, url, SCHEMA)
    after = _fetch(url, SELECT)
    assert len(after) == 3
    for r in after:
        key = (r["project_id"], r["granularity"], r["dim_kind"], r["dim_value"], r["name"], r["bucket"], r["source"],
               r["config_id"], r["data_type"], r["value_key"])
        assert (r["dims_id"], r["series_id"]) == row_ids(key)
    assert [{k: v for k, v in r.items() if k not in ("dims_id", "series_id")} for r in after] == before
    pk = _fetch(url, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                     "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'projections.score_rollup'::regclass "
                     "AND i.indisprimary")
    assert {r["attname"] for r in pk} == {"dims_id", "bucket", "series_id", "shard"}

    command.downgrade(alembic_config(MIGRATIONS, url, SCHEMA), BEFORE)
    assert _fetch(url, SELECT) == before
