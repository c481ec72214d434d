"""Bulk writes built from our own table definitions: a whole batch travels as ONE JSON array parameter and
PostgreSQL unpacks it with ``json_to_recordset``.

Why one JSON array rather than multi-row VALUES or one array per column: the statement text is the same for any
batch size (prepared once, one cached plan), orjson serialises the rows faster than asyncpg encodes per-row or
per-element parameters, and PostgreSQL's JSON parser is cheap. Bytes travel as base64 (``decode(..., 'base64')``).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import CursorResult, LargeBinary, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

_DIALECT = postgresql.dialect()
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
# Column types as json_to_recordset declares them; anything else is the type SQLAlchemy compiles.
_TYPE_NAMES = {"VARCHAR": "text", "TEXT": "text", "TIMESTAMP WITH TIME ZONE": "timestamptz",
               "FLOAT": "double precision", "JSONB": "jsonb", "JSON": "json", "BYTEA": "text"}


def ident(name: str) -> str:
    """A quoted identifier; only plain lower-case names (ours) are accepted, so nothing from input can get in."""
    if not _IDENT.match(name):
        raise ValueError(f"bad identifier {name!r}")
    return f'"{name}"'


def qualified(table: Table) -> str:
    """``"schema"."table"``: every statement names the table's own schema (no reliance on search_path)."""
    return f"{ident(table.schema)}.{ident(table.name)}" if table.schema else ident(table.name)


def pg_type(table: Table, column: str) -> str:
    compiled = table.c[column].type.compile(dialect=_DIALECT)
    array = compiled.endswith("[]")  # VARCHAR(200)[] is text[], not text
    base = compiled[:-2] if array else compiled
    name = _TYPE_NAMES.get(base.split("(")[0], base.lower())
    return f"{name}[]" if array else name


def _value_expr(table: Table, column: str) -> str:
    if isinstance(table.c[column].type, LargeBinary):
        return f"decode(u.{ident(column)}, 'base64')"
    return f"u.{ident(column)}"


def insert_sql(table: Table, columns: Sequence[str], *, conflict: Sequence[str] = (),
               update: Sequence[str] | str | None = None, returning: str | None = None) -> TextClause:
    """``INSERT INTO table (columns) SELECT ... FROM json_to_recordset(:rows)``.

    ``conflict``: the conflict target (empty: any conflict); ``update``: the columns to overwrite from the new row
    (``DO UPDATE SET c = EXCLUDED.c``), a hand-written ``SET`` clause (the target table is aliased ``t``), or
    None for ``DO NOTHING``. No conflict clause at all when both are empty/None. ``returning``: a RETURNING list.
    """
    key = (table.fullname, tuple(columns), tuple(conflict), update if isinstance(update, str | None)
           else tuple(update), returning)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    types = ", ".join(f"{ident(c)} {pg_type(table, c)}" for c in columns)
    cols = ", ".join(ident(c) for c in columns)
    values = ", ".join(_value_expr(table, c) for c in columns)
    # Identifiers come from our own table metadata, never from input; the data is one bound parameter.
    sql = (f"INSERT INTO {qualified(table)} AS t ({cols}) SELECT {values} "  # noqa: S608
           f"FROM json_to_recordset(CAST(:rows AS json)) AS u({types})")
    target = f" ({', '.join(ident(c) for c in conflict)})" if conflict else ""
    if isinstance(update, str):
        sql += f" ON CONFLICT{target} DO UPDATE SET {update}"
    elif update:
        sql += f" ON CONFLICT{target} DO UPDATE SET {set_excluded(update)}"
    elif conflict or update is not None:
        sql += f" ON CONFLICT{target} DO NOTHING"
    if returning:
        sql += f" RETURNING {returning}"
    stmt = _CACHE[key] = text(sql)
    return stmt


_CACHE: dict[tuple[Any, ...], TextClause] = {}


def set_excluded(columns: Sequence[str]) -> str:
    """``c = EXCLUDED.c, ...``: the new row's values win."""
    return ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns)


def _default(o: Any) -> Any:
    if isinstance(o, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(o)).decode()
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, uuid.UUID):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def rows_param(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The one bound parameter of ``insert_sql`` statements."""
    return {"rows": orjson.dumps(list(rows), default=_default, option=orjson.OPT_NON_STR_KEYS).decode()}


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *,
                      conflict: Sequence[str] = (), update: Sequence[str] | str | None = None,
                      returning: str | None = None) -> CursorResult[Any]:
    """One statement for all ``rows`` (every row has the same keys, the first row's). See ``insert_sql``."""
    if not rows:
        raise ValueError("insert_rows needs at least one row")
    stmt = insert_sql(table, tuple(rows[0]), conflict=conflict, update=update, returning=returning)
    result: CursorResult[Any] = await session.execute(stmt, rows_param(rows))  # type: ignore[assignment]
    return result


async def upsert(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *,
                 conflict: Sequence[str] | None = None, update: Sequence[str] | str | None = None,
                 returning: str | None = None) -> CursorResult[Any] | None:
    """Insert ``rows``, overwriting the rows already there. ``conflict`` defaults to the primary key, ``update``
    to every other column given. Nothing is sent for no rows (then None)."""
    if not rows:
        return None
    keys = list(conflict) if conflict is not None else [c.name for c in table.primary_key.columns]
    if update is None:
        update = [c for c in rows[0] if c not in keys]
    return await insert_rows(session, table, rows, conflict=keys, update=update or None, returning=returning)


def select_by_keys(table: Table, key_cols: Sequence[str], columns: Sequence[str] | None = None) -> TextClause:
    """Rows whose key columns are each in the given arrays (bind one list per key column, named like it):
    ``= ANY`` keeps to the primary-key index (a join against ``unnest`` tends to hash-join over the whole table).
    The caller drops the few rows that match per column but not as a tuple."""
    cols = "*" if columns is None else ", ".join(f"t.{ident(c)}" for c in columns)
    cond = " AND ".join(f"t.{ident(c)} = ANY(CAST(:{c} AS {pg_type(table, c)}[]))" for c in key_cols)
    return text(f"SELECT {cols} FROM {qualified(table)} t WHERE {cond}")  # noqa: S608
