"""Bulk statements built from our own table definitions: ``INSERT ... SELECT FROM unnest(arrays)`` sends a whole
batch as one array per column, so one statement text (prepared once) serves any batch size."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
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
    return {"VARCHAR": "text", "TEXT": "text", "TIMESTAMP WITH TIME ZONE": "timestamptz",
            "FLOAT": "double precision"}.get(compiled.split("(")[0], compiled.lower())


def upsert_sql(table: Table, columns: Sequence[str], conflict: Sequence[str], update: str | None,
               returning: str | None = None) -> TextClause:
    """``INSERT ... SELECT FROM json_to_recordset(:rows)``: the whole batch travels as one JSON text (orjson on
    our side, PostgreSQL's JSON parser on the other), which is much cheaper than one array per column (asyncpg
    checks every array element in Python). ``update``: the ``DO UPDATE SET`` clause, or None for ``DO NOTHING``."""
    types = ", ".join(f"{ident(c)} {_pg_type(table, c)}" for c in columns)
    cols = ", ".join(ident(c) for c in columns)
    action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
    sql = (
        f"INSERT INTO {qualified(table)} AS t ({cols}) SELECT {cols} "  # noqa: S608 (identifiers are our own tables)
        f"FROM json_to_recordset(CAST(:rows AS json)) AS u({types}) "
        f"ON CONFLICT ({', '.join(ident(c) for c in conflict)}) {action}"
    )
    if returning:
        sql += f" RETURNING {returning}"
    return text(sql)


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rows_param(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {"rows": orjson.dumps(rows, default=_json_default).decode()}


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


def select_by_keys(table: Table, key_cols: Sequence[str], columns: Sequence[str] | None = None) -> TextClause:
    """Rows whose key columns are each in the given arrays: ``= ANY`` keeps to the primary-key index (a join
    against ``unnest`` tends to hash-join over the whole table). The caller drops the few rows that match
    per column but not as a tuple."""
    cols = "*" if columns is None else ", ".join(f"t.{ident(c)}" for c in columns)
    key_types = [_pg_type(table, c) for c in key_cols]
    cond = " AND ".join(f"t.{ident(c)} = ANY(CAST(:{c} AS {t}[]))" for c, t in zip(key_cols, key_types, strict=True))
    return text(f"SELECT {cols} FROM {qualified(table)} t WHERE {cond}")  # noqa: S608
