"""Bulk statements built from our own table definitions: ``INSERT ... SELECT FROM unnest(arrays)`` sends a whole
batch as one array per column, so one statement text (prepared once) serves any batch size."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import text
from sqlalchemy.sql.elements import TextClause

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"bad identifier {name!r}")
    return f'"{name}"'


def qualified(table: Table) -> str:
    assert table.schema is not None
    return f"{ident(table.schema)}.{ident(table.name)}"


def _pg_type(table: Table, col: str) -> str:
    t = table.c[col].type
    if isinstance(t, postgresql.JSONB):
        return "jsonb"
    compiled = t.compile(dialect=postgresql.dialect())
    return {"VARCHAR": "text", "TEXT": "text", "TIMESTAMP WITH TIME ZONE": "timestamptz"}.get(
        compiled.split("(")[0], compiled.lower()
    )


def upsert_sql(table: Table, columns: Sequence[str], conflict: Sequence[str], update: str | None,
               returning: str | None = None) -> TextClause:
    """``update``: the SET clause (``DO UPDATE SET ...``), or None for ``DO NOTHING``. JSONB columns travel as
    text and are cast in SQL (arrays of jsonb would need a codec)."""
    types = [_pg_type(table, c) for c in columns]
    arrays = ", ".join(
        f"CAST(:{c} AS {'text' if t == 'jsonb' else t}[])" for c, t in zip(columns, types, strict=True)
    )
    select = ", ".join(
        f"u.{ident(c)}::jsonb" if t == "jsonb" else f"u.{ident(c)}" for c, t in zip(columns, types, strict=True)
    )
    cols = ", ".join(ident(c) for c in columns)
    action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
    sql = (
        f"INSERT INTO {qualified(table)} AS t ({cols}) SELECT {select} FROM unnest({arrays}) AS u({cols}) "  # noqa: S608 (identifiers are our own table definitions)
        f"ON CONFLICT ({', '.join(ident(c) for c in conflict)}) {action}"
    )
    if returning:
        sql += f" RETURNING {returning}"
    return text(sql)


def set_all(columns: Sequence[str], conflict: Sequence[str]) -> str:
    return ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns if c not in conflict)


def jdump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def columnar(rows: Sequence[dict[str, Any]], columns: Sequence[str], json_cols: frozenset[str] = frozenset()
             ) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c in columns:
        if c in json_cols:
            out[c] = [jdump(r.get(c)) for r in rows]
        else:
            out[c] = [r.get(c) for r in rows]
    return out


async def execute(session: AsyncSession, stmt: TextClause, params: dict[str, Any]) -> Any:
    return await session.execute(stmt, params)


def select_by_keys(table: Table, key_cols: Sequence[str], columns: Sequence[str] | None = None,
                   lock: bool = False) -> TextClause:
    cols = "*" if columns is None else ", ".join(f"t.{ident(c)}" for c in columns)
    key_types = [_pg_type(table, c) for c in key_cols]
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(key_cols, key_types, strict=True))
    cond = " AND ".join(f"t.{ident(c)} = k.{ident(c)}" for c in key_cols)
    sql = (
        f"SELECT {cols} FROM {qualified(table)} t JOIN unnest({arrays}) AS k({', '.join(ident(c) for c in key_cols)}) "  # noqa: S608
        f"ON {cond}"
    )
    if lock:
        sql += " FOR UPDATE OF t"
    return text(sql)
