"""The embedded PostgreSQL keeps its data across a stop and start (what `tally up` relies on)."""

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tally_shared import infra
from tally_shared.db import plain_url


async def _run(url: str, *sql: str) -> int:
    conn = await asyncpg.connect(plain_url(url))
    try:
        for stmt in sql[:-1]:
            await conn.execute(stmt)
        return int(await conn.fetchval(sql[-1]))
    finally:
        await conn.close()


@pytest.mark.processes
def test_embedded_postgres_data_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    url = infra.embedded_postgres_url(data)
    try:
        assert asyncio.run(_run(url, "CREATE TABLE kept (a int)", "INSERT INTO kept VALUES (1), (2)",
                                "SELECT count(*) FROM kept")) == 2
        infra.stop_embedded_postgres(data)
        assert not (data / "postmaster.pid").exists()
        url = infra.embedded_postgres_url(data)
        assert asyncio.run(_run(url, "SELECT count(*) FROM kept")) == 2
    finally:
        infra.stop_embedded_postgres(data)
