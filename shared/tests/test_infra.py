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


async def _show(url: str, *names: str) -> list[str]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return [str(await conn.fetchval(f"SHOW {name}")) for name in names]
    finally:
        await conn.close()


@pytest.mark.processes
def test_embedded_postgres_settings_apply_to_new_and_existing_data_dirs(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    names = ("shared_buffers", "checkpoint_timeout", "max_wal_size", "default_statistics_target")
    expected = ["512MB", "15min", "4GB", "20"]
    assert [infra.EMBEDDED_PG_SETTINGS[n] for n in names] == expected
    url = infra.embedded_postgres_url(data)
    try:
        # a fresh data dir runs with them from the first URL handed out
        assert asyncio.run(_show(url, *names)) == expected
        asyncio.run(_run(url, "CREATE TABLE kept (a int)", "INSERT INTO kept VALUES (1)", "SELECT count(*) FROM kept"))
        # a data dir made before these settings existed (no include, no file) gets them at its next start
        infra.stop_embedded_postgres(data)
        conf = data / "postgresql.conf"
        conf.write_text("".join(line for line in conf.read_text().splitlines(keepends=True)
                                if "tally.conf" not in line))
        (data / infra.EMBEDDED_PG_CONF).unlink()
        url = infra.embedded_postgres_url(data)
        assert asyncio.run(_show(url, *names)) == expected
        assert asyncio.run(_run(url, "SELECT count(*) FROM kept")) == 1
        # ALTER SYSTEM still overrides them, and restarts neither duplicate the include nor undo the override
        asyncio.run(_run(url, "ALTER SYSTEM SET default_statistics_target = 50", "SELECT 1"))
        infra.stop_embedded_postgres(data)
        url = infra.embedded_postgres_url(data)
        assert asyncio.run(_show(url, "default_statistics_target", "shared_buffers")) == ["50", "512MB"]
        assert conf.read_text().count(f"'{infra.EMBEDDED_PG_CONF}'") == 1
    finally:
        infra.stop_embedded_postgres(data)
