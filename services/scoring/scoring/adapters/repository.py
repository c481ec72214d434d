"""Reads and writes of the scoring schema (SQLAlchemy Core; every statement is parameterised)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from scoring.adapters.fast_pool import FastPool
from scoring.adapters.tables import score_config_versions, score_configs, score_history, scores
from tally_shared.envelope import Envelope
from tally_shared.events import ScoreConfigData, ScoreData

# ---------------------------------------------------------------- configs


async def insert_config(s: AsyncSession, project_id: str, c: ScoreConfigData) -> bool:
    """False if the name is taken in this project."""
    data = c.model_dump(mode="json")
    row = (await s.execute(
        pg_insert(score_configs).values(
            id=c.id, project_id=project_id, version=c.version, name=c.name, data_type=c.data_type.value,
            is_archived=c.is_archived, data=data, created_at=c.created_at, updated_at=c.updated_at,
        ).on_conflict_do_nothing().returning(score_configs.c.id)
    )).first()
    if row is None:
        return False
    await s.execute(score_config_versions.insert().values(config_id=c.id, version=c.version, data=data))
    return True


async def name_taken(s: AsyncSession, project_id: str, name: str, except_id: str | None = None) -> bool:
    q = select(score_configs.c.id).where(score_configs.c.project_id == project_id, score_configs.c.name == name)
    if except_id is not None:
        q = q.where(score_configs.c.id != except_id)
    return (await s.execute(q)).first() is not None


async def save_config(s: AsyncSession, project_id: str, c: ScoreConfigData, *, new_version: bool) -> None:
    data = c.model_dump(mode="json")
    await s.execute(
        update(score_configs)
        .where(score_configs.c.id == c.id, score_configs.c.project_id == project_id)
        .values(version=c.version, name=c.name, data_type=c.data_type.value, is_archived=c.is_archived,
                data=data, updated_at=c.updated_at)
    )
    if new_version:
        await s.execute(score_config_versions.insert().values(config_id=c.id, version=c.version, data=data))
    else:
        await s.execute(
            update(score_config_versions)
            .where(score_config_versions.c.config_id == c.id, score_config_versions.c.version == c.version)
            .values(data=data)
        )


async def get_config(s: AsyncSession, project_id: str, config_id: str, *, lock: bool = False) -> ScoreConfigData | None:
    q = select(score_configs.c.data).where(score_configs.c.id == config_id, score_configs.c.project_id == project_id)
    if lock:
        q = q.with_for_update()
    row = (await s.execute(q)).first()
    return ScoreConfigData.model_validate(row.data) if row else None


async def get_configs(s: AsyncSession, project_id: str, ids: Iterable[str]) -> dict[str, ScoreConfigData]:
    wanted = list({i for i in ids if i})
    if not wanted:
        return {}
    rows = (await s.execute(
        select(score_configs.c.data).where(score_configs.c.project_id == project_id, score_configs.c.id.in_(wanted))
    )).all()
    out = {}
    for r in rows:
        c = ScoreConfigData.model_validate(r.data)
        out[c.id] = c
    return out


async def config_versions(s: AsyncSession, project_id: str, config_id: str) -> list[ScoreConfigData]:
    rows = (await s.execute(
        select(score_config_versions.c.data)
        .join(score_configs, score_configs.c.id == score_config_versions.c.config_id)
        .where(score_configs.c.project_id == project_id, score_config_versions.c.config_id == config_id)
        .order_by(score_config_versions.c.version)
    )).all()
    return [ScoreConfigData.model_validate(r.data) for r in rows]


async def list_configs(
    s: AsyncSession, project_id: str, *, page: int, limit: int, include_archived: bool = True,
) -> tuple[list[ScoreConfigData], int]:
    cond: list[ColumnElement[bool]] = [score_configs.c.project_id == project_id]
    if not include_archived:
        cond.append(score_configs.c.is_archived.is_(False))
    total = (await s.execute(select(func.count()).select_from(score_configs).where(*cond))).scalar_one()
    rows = (await s.execute(
        select(score_configs.c.data).where(*cond)
        .order_by(score_configs.c.created_at.desc(), score_configs.c.id)
        .limit(limit).offset((page - 1) * limit)
    )).all()
    return [ScoreConfigData.model_validate(r.data) for r in rows], int(total)


# ---------------------------------------------------------------- scores


@dataclass
class StoredScore:
    score: ScoreData
    revision: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    idempotency_key: str | None


def _score_columns(sc: ScoreData) -> dict[str, Any]:
    return {
        "name": sc.name, "data_type": sc.data_type.value, "value": sc.value,
        "string_value": sc.string_value if sc.string_values is None else ", ".join(sc.string_values),
        "source": sc.source.value, "trace_id": sc.trace_id, "observation_id": sc.observation_id,
        "session_id": sc.session_id, "dataset_run_id": sc.dataset_run_id, "config_id": sc.config_id,
        "config_version": sc.config_version, "author_user_id": sc.author_user_id, "queue_id": sc.queue_id,
        "environment": sc.environment or "default", "timestamp": sc.timestamp, "data": sc.model_dump(mode="json"),
    }


_STORED = (scores.c.data, scores.c.revision, scores.c.created_at, scores.c.updated_at, scores.c.deleted_at,
           scores.c.idempotency_key)


def _stored(r: Any) -> StoredScore:
    return StoredScore(ScoreData.model_validate(r.data), r.revision, r.created_at, r.updated_at, r.deleted_at,
                       r.idempotency_key)


async def insert_scores(
    s: AsyncSession, project_id: str, items: Sequence[tuple[ScoreData, str | None]], now: datetime,
) -> set[str]:
    """Insert new scores; returns the ids inserted. Ids (or idempotency keys) already present are skipped."""
    if not items:
        return set()
    rows = [
        {"project_id": project_id, "id": sc.id, **_score_columns(sc), "revision": 1, "idempotency_key": key,
         "created_at": now, "updated_at": now}
        for sc, key in items
    ]
    result = await s.execute(pg_insert(scores).values(rows).on_conflict_do_nothing().returning(scores.c.id))
    return {r[0] for r in result.all()}


async def get_scores(
    s: AsyncSession, project_id: str, ids: Iterable[str], *, lock: bool = False,
) -> dict[str, StoredScore]:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    q = select(*_STORED).where(scores.c.project_id == project_id, scores.c.id.in_(wanted))
    if lock:
        q = q.with_for_update()
    return {st.score.id: st for st in map(_stored, (await s.execute(q)).all())}


async def get_by_idempotency_keys(s: AsyncSession, project_id: str, keys: Iterable[str]) -> dict[str, StoredScore]:
    wanted = list({k for k in keys if k})
    if not wanted:
        return {}
    rows = (await s.execute(
        select(*_STORED).where(scores.c.project_id == project_id, scores.c.idempotency_key.in_(wanted))
    )).all()
    return {st.idempotency_key: st for st in map(_stored, rows) if st.idempotency_key}


async def save_score(s: AsyncSession, project_id: str, sc: ScoreData, revision: int, now: datetime) -> None:
    await s.execute(
        update(scores).where(scores.c.project_id == project_id, scores.c.id == sc.id)
        .values(**_score_columns(sc), revision=revision, updated_at=now)
    )


async def mark_deleted(s: AsyncSession, project_id: str, score_id: str, revision: int, now: datetime,
                       actor: str | None) -> None:
    await s.execute(
        update(scores).where(scores.c.project_id == project_id, scores.c.id == score_id)
        .values(deleted_at=now, deleted_by=actor, revision=revision, updated_at=now)
    )


async def add_history(s: AsyncSession, project_id: str, entries: Sequence[tuple[ScoreData, int, str, str | None]],
                      now: datetime) -> None:
    if not entries:
        return
    await s.execute(score_history.insert(), [
        {"project_id": project_id, "score_id": sc.id, "revision": rev, "action": action,
         "data": sc.model_dump(mode="json"), "actor": actor, "at": now}
        for sc, rev, action, actor in entries
    ])


async def history(s: AsyncSession, project_id: str, score_id: str) -> list[dict[str, Any]]:
    rows = (await s.execute(
        select(score_history).where(score_history.c.project_id == project_id, score_history.c.score_id == score_id)
        .order_by(score_history.c.revision)
    )).all()
    return [{"revision": r.revision, "action": r.action, "actor": r.actor, "at": r.at, "score": r.data}
            for r in rows]


@dataclass
class ScoreFilter:
    ids: list[str] | None = None
    names: list[str] | None = None
    sources: list[str] | None = None
    data_types: list[str] | None = None
    environments: list[str] | None = None
    config_ids: list[str] | None = None
    queue_ids: list[str] | None = None
    author_user_ids: list[str] | None = None
    trace_ids: list[str] | None = None
    observation_ids: list[str] | None = None
    session_ids: list[str] | None = None
    dataset_run_ids: list[str] | None = None
    values: list[float] | None = None
    string_values: list[str] | None = None
    value_op: tuple[str, float] | None = None
    value_min: float | None = None
    value_max: float | None = None
    from_ts: datetime | None = None
    to_ts: datetime | None = None


_OPS = {"=": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}


def _conditions(project_id: str, f: ScoreFilter) -> list[ColumnElement[bool]]:
    c = scores.c
    cond: list[ColumnElement[bool]] = [c.project_id == project_id, c.deleted_at.is_(None)]
    for col, vals in ((c.id, f.ids), (c.name, f.names), (c.source, f.sources), (c.data_type, f.data_types),
                      (c.environment, f.environments), (c.config_id, f.config_ids), (c.queue_id, f.queue_ids),
                      (c.author_user_id, f.author_user_ids), (c.trace_id, f.trace_ids),
                      (c.observation_id, f.observation_ids), (c.session_id, f.session_ids),
                      (c.dataset_run_id, f.dataset_run_ids)):
        if vals is not None:
            cond.append(col.in_(vals))
    if f.values is not None:
        cond.append(c.value.in_(f.values))
    if f.string_values is not None:
        cond.append(c.string_value.in_(f.string_values))
    if f.value_op is not None:
        op, v = f.value_op
        cond.append(getattr(c.value, _OPS[op])(v))
    if f.value_min is not None:
        cond.append(c.value >= f.value_min)
    if f.value_max is not None:
        cond.append(c.value <= f.value_max)
    if f.from_ts is not None:
        cond.append(c.timestamp >= f.from_ts)
    if f.to_ts is not None:
        cond.append(c.timestamp < f.to_ts)
    return cond


async def list_scores_page(
    s: AsyncSession, project_id: str, f: ScoreFilter, *, page: int, limit: int,
) -> tuple[list[StoredScore], int]:
    cond = _conditions(project_id, f)
    total = (await s.execute(select(func.count()).select_from(scores).where(*cond))).scalar_one()
    rows = (await s.execute(
        select(*_STORED).where(*cond).order_by(scores.c.timestamp.desc(), scores.c.id.desc())
        .limit(limit).offset((page - 1) * limit)
    )).all()
    return [_stored(r) for r in rows], int(total)


async def list_scores_after(
    s: AsyncSession, project_id: str, f: ScoreFilter, *, after: tuple[datetime, str] | None, limit: int,
) -> list[StoredScore]:
    """Keyset pagination, newest first: the page after (timestamp, id)."""
    cond = _conditions(project_id, f)
    if after is not None:
        cond.append(or_(scores.c.timestamp < after[0],
                        and_(scores.c.timestamp == after[0], scores.c.id < after[1])))
    rows = (await s.execute(
        select(*_STORED).where(*cond).order_by(scores.c.timestamp.desc(), scores.c.id.desc()).limit(limit)
    )).all()
    return [_stored(r) for r in rows]


async def config_has_scores(s: AsyncSession, project_id: str, config_id: str) -> bool:
    q = select(scores.c.id).where(scores.c.project_id == project_id, scores.c.config_id == config_id).limit(1)
    return (await s.execute(q)).first() is not None



# One statement writes new scores, their history rows and their outbox rows (atomic without an explicit
# transaction, so one round trip). A row is skipped, and left to the transactional path, when its id or idempotency
# key exists already, or when its config no longer has the version it was validated against or was archived.
_INSERT_NEW = """
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::int[], $14::text[], $15::text[],
                         $16::text[], $17::timestamptz[], $18::text[], $19::text[], $20::uuid[], $21::bytea[],
                         $22::text[])
        AS t(id, name, data_type, value, string_value, source, trace_id, observation_id, session_id,
             dataset_run_id, config_id, config_version, author_user_id, queue_id, environment, ts, data,
             idempotency_key, event_id, body, event_key)
    WHERE t.config_id IS NULL OR EXISTS (
        SELECT 1 FROM scoring.score_configs c
        WHERE c.id = t.config_id AND c.project_id = $1 AND c.version = t.config_version AND NOT c.is_archived)
), ins AS (
    INSERT INTO scoring.scores (project_id, id, name, data_type, value, string_value, source, trace_id,
        observation_id, session_id, dataset_run_id, config_id, config_version, author_user_id, queue_id,
        environment, "timestamp", data, revision, idempotency_key, created_at, updated_at)
    SELECT $1, id, name, data_type, value, string_value, source, trace_id, observation_id, session_id,
        dataset_run_id, config_id, config_version, author_user_id, queue_id, environment, ts, data::jsonb, 1,
        idempotency_key, $23, $23
    FROM input
    ON CONFLICT DO NOTHING
    RETURNING id
), hist AS (
    INSERT INTO scoring.score_history (project_id, score_id, revision, action, data, actor, at)
    SELECT $1, input.id, 1, 'created', input.data::jsonb, $24, $23 FROM input JOIN ins ON ins.id = input.id
), ob AS (
    INSERT INTO scoring.outbox (id, project_id, aggregate_id, topic, key, event_type, body)
    SELECT input.event_id, $1, input.id, 'tally.scores', input.event_key, 'ScoreRecorded', input.body
    FROM input JOIN ins ON ins.id = input.id
)
SELECT id FROM ins
"""


async def insert_new_scores(
    pool: FastPool, project_id: str,
    items: Sequence[tuple[ScoreData, str | None, Envelope]], actor: str | None, now: datetime,
) -> set[str]:
    """Fast path for new scores (ids and keys unique within ``items``); returns the ids written."""
    if not items:
        return set()
    cols: list[list[Any]] = [[] for _ in range(21)]
    for sc, key, env in items:
        c = _score_columns(sc)
        for i, v in enumerate((
            sc.id, c["name"], c["data_type"], c["value"], c["string_value"], c["source"], c["trace_id"],
            c["observation_id"], c["session_id"], c["dataset_run_id"], c["config_id"], c["config_version"],
            c["author_user_id"], c["queue_id"], c["environment"], c["timestamp"], orjson.dumps(c["data"]).decode(),
            key, env.id, env.to_bytes(), env.key,
        )):
            cols[i].append(v)
    async with (await pool.get()).acquire() as conn:
        rows = await conn.fetch(_INSERT_NEW, project_id, *cols, now, actor)
    return {r["id"] for r in rows}
