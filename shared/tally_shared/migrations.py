"""Alembic, the same way for every service: each service owns one PostgreSQL schema and keeps its Alembic
version table inside it. A service's ``migrations/env.py`` is just ``run_env("<schema>")``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tally_shared.db import async_url, connect_args

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def alembic_config(script_location: Path, database_url: str, schema: str) -> Config:
    if not _IDENT.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    # '%' is ConfigParser interpolation; URLs may contain it (escaped passwords).
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(script_location: Path, database_url: str, schema: str, revision: str = "head") -> None:
    """Apply migrations (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(script_location, database_url, schema), revision)


async def upgrade_async(script_location: Path, database_url: str, schema: str) -> None:
    await asyncio.to_thread(upgrade, script_location, database_url, schema)


def run_env(schema: str, target_metadata: MetaData | None = None) -> None:
    """Body of a service's Alembic ``env.py`` (online mode only)."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def _migrate(conn: Connection) -> None:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def _run() -> None:
        engine = create_async_engine(async_url(url), poolclass=NullPool, connect_args=connect_args(url))
        try:
            async with engine.connect() as conn:
                # Two processes migrating the same schema at once would race; the advisory lock serialises them.
                await conn.execute(text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": schema})
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()
                await conn.run_sync(_migrate)
                await conn.commit()
                await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": schema})
        finally:
            await engine.dispose()

    asyncio.run(_run())
